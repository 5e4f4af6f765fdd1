package app

import (
	"net/http"

	"github.com/tocsin/tocsin/internal/metrics"
	"github.com/tocsin/tocsin/internal/stream"
)

// instrument builds the node's metrics from the counters its services keep. Values are read
// at scrape time; nothing on a hot path takes a lock for them.
func (n *Node) instrument() {
	m := metrics.New()
	n.Metrics = m
	n.Hub.ReadFunc = m.FanoutRead
	m.OutboxBacklog(n.pool)
	m.Gauge("tocsin_long_polls_parked", "Long polls waiting on this node's hub.", func() float64 {
		return float64(n.Hub.Waiting())
	})
	if n.API == nil {
		return
	}
	streams := n.API.StreamCounters()
	m.Gauge("tocsin_streams_open", "Open Server-Sent Events streams on this node.", func() float64 {
		return float64(streams.Open())
	})
	m.Gauge("tocsin_connections", "Open streams and parked long polls counted by admission control.", func() float64 {
		return float64(n.API.Stats().Connections)
	})
	ends := map[string]func() float64{}
	for _, r := range stream.EndReasons {
		ends[string(r)] = func() float64 { return float64(streams.Ended(r)) }
	}
	m.CounterFuncs("tocsin_stream_ends_total",
		"Streams ended, by reason (client_gone is the client's doing; the others are forced disconnects).", "reason", ends)
	m.CounterFuncs("tocsin_rejected_total", "Requests refused by admission control, by reason.", "reason",
		map[string]func() float64{
			"too_many_streams": func() float64 { return float64(n.API.Stats().RejectedTooManyStreams) },
			"overloaded":       func() float64 { return float64(n.API.Stats().RejectedOverloaded) },
		})
}

// withMetrics serves GET /metrics beside the API.
func (n *Node) withMetrics(api http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", n.Metrics.Handler())
	mux.Handle("/", api)
	return mux
}
