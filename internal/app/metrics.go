package app

import (
	"net/http"
	"strconv"
	"time"

	"github.com/tocsin/tocsin/internal/capture"
	"github.com/tocsin/tocsin/internal/debezium"
	"github.com/tocsin/tocsin/internal/stream"
)

// instrument builds the node's metrics from the counters its services keep. Values are read
// at scrape time; nothing on a hot path takes a lock for them.
func (n *Node) instrument() {
	m := n.Metrics
	n.Hub.ReadFunc = m.FanoutRead
	if n.Capture != nil {
		c := n.Capture
		m.Gauge("tocsin_slot_retained_wal_bytes", "WAL the replication slot holds back (restart_lsn to now).",
			func() float64 { return float64(c.Status().RetainedBytes) })
		m.Gauge("tocsin_slot_lag_bytes", "WAL not yet confirmed by the capture consumer.",
			func() float64 { return float64(c.Status().LagBytes) })
		m.GaugeFuncs("tocsin_slot_wal_status", "The slot's wal_status (1 for the current one).", "status",
			slotStatuses(c))
		m.Gauge("tocsin_capture_lag_seconds", "Time since the source commit of the last transaction this node applied.",
			func() float64 {
				if at := c.Status().LastCommitAt; !at.IsZero() {
					return time.Since(at).Seconds()
				}
				return 0
			})
	}
	if d := n.Debezium; d != nil {
		skipped := map[string]func() float64{}
		for _, r := range []string{debezium.ReasonNotJSON, debezium.ReasonNotEnvelope, debezium.ReasonUnknownTable} {
			skipped[r] = func() float64 { return float64(d.Skipped()[r]) }
		}
		m.CounterFuncs("tocsin_debezium_skipped_total",
			"Kafka records skipped as poison (logged at ERROR with topic, partition and offset), by reason.", "reason", skipped)
		m.CounterFunc("tocsin_debezium_resent_total",
			"Change events Debezium sent again after its own restart, recognised and skipped.",
			func() float64 { return float64(d.Resent()) })
		m.CounterFunc("tocsin_debezium_gaps_total",
			"Kafka partitions found with records deleted before Tocsin read them; each reset the feed epoch (410 for every client).",
			func() float64 { return float64(d.Gaps()) })
		m.GaugeVecFunc("tocsin_debezium_partition_lag",
			"Records of a Kafka partition not yet applied (high watermark minus the stored next offset).",
			[]string{"topic", "partition"}, func(emit func(float64, ...string)) {
				for _, l := range d.Lag() {
					emit(float64(l.Lag), l.Topic, strconv.Itoa(int(l.Partition)))
				}
			})
	}
	m.OutboxBacklog(n.pool)
	if n.API == nil {
		return
	}
	m.Gauge("tocsin_long_polls_parked", "Long polls in flight on this node (streams are counted apart).", func() float64 {
		return float64(n.API.Stats().LongPolls)
	})
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

func slotStatuses(c *capture.Consumer) map[string]func() float64 {
	out := map[string]func() float64{}
	for _, st := range []string{"reserved", "extended", "unreserved", "lost", "missing"} {
		out[st] = func() float64 {
			cur := c.Status().WALStatus
			if cur == "" {
				cur = "missing"
			}
			if cur == st {
				return 1
			}
			return 0
		}
	}
	return out
}
