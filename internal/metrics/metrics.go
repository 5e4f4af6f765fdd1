// Package metrics holds Tocsin's Prometheus metrics. Services report through small methods
// here (or through the callbacks they already expose), so that no domain package imports
// the Prometheus client.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is one node's set of metrics, on a registry of its own.
type Metrics struct {
	registry *prometheus.Registry

	sequenced        prometheus.Counter
	sequencerBatches prometheus.Histogram
	sequencerLag     prometheus.Histogram
	delivered        *prometheus.CounterVec
	deliveryLatency  *prometheus.HistogramVec
	disconnects      *prometheus.CounterVec
	doorbellReconn   prometheus.Counter
	fanoutReads      prometheus.Counter
}

// latencyBuckets span a millisecond to a minute.
var latencyBuckets = []float64{.001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10, 30, 60}

// New returns the metrics of a node.
func New() *Metrics {
	m := &Metrics{registry: prometheus.NewRegistry()}
	m.sequenced = prometheus.NewCounter(prometheus.CounterOpts{Name: "tocsin_events_sequenced_total",
		Help: "Outbox rows given a feed position by this node's sequencer."})
	m.sequencerBatches = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tocsin_sequencer_batch_rows",
		Help: "Rows moved per sequencer batch.", Buckets: prometheus.ExponentialBuckets(1, 4, 7)})
	m.sequencerLag = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tocsin_sequencer_lag_seconds",
		Help: "Age of a batch's oldest outbox row when it was sequenced (capture to feed).", Buckets: latencyBuckets})
	m.delivered = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tocsin_events_delivered_total",
		Help: "Events written to clients, by transport (short_poll, long_poll, sse)."}, []string{"transport"})
	m.deliveryLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tocsin_delivery_latency_seconds",
		Help: "Time from an event's capture to its delivery to a client, by transport.", Buckets: latencyBuckets},
		[]string{"transport"})
	m.disconnects = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tocsin_forced_disconnects_total",
		Help: "Streams and polls ended by the server, by reason."}, []string{"reason"})
	m.doorbellReconn = prometheus.NewCounter(prometheus.CounterOpts{Name: "tocsin_doorbell_reconnects_total",
		Help: "Times the doorbell listener reconnected (a NOTIFY may have been missed; the hub looked the head up)."})
	m.fanoutReads = prometheus.NewCounter(prometheus.CounterOpts{Name: "tocsin_hub_fanout_reads_total",
		Help: "Feed reads made by the hub to serve all of this node's waiting clients."})
	m.registry.MustRegister(m.sequenced, m.sequencerBatches, m.sequencerLag, m.delivered, m.deliveryLatency,
		m.disconnects, m.doorbellReconn, m.fanoutReads,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// Batch records one sequencer batch of rows whose oldest row was captured lag ago.
func (m *Metrics) Batch(rows int, lag time.Duration) {
	m.sequenced.Add(float64(rows))
	m.sequencerBatches.Observe(float64(rows))
	if lag >= 0 {
		m.sequencerLag.Observe(lag.Seconds())
	}
}

// Delivered records events handed to a client over transport, captured at the given times.
func (m *Metrics) Delivered(transport string, capturedAt []time.Time) {
	now := time.Now()
	m.delivered.WithLabelValues(transport).Add(float64(len(capturedAt)))
	h := m.deliveryLatency.WithLabelValues(transport)
	for _, t := range capturedAt {
		h.Observe(now.Sub(t).Seconds())
	}
}

// Disconnect records a stream or poll the server ended, and why.
func (m *Metrics) Disconnect(reason string) { m.disconnects.WithLabelValues(reason).Inc() }

// DoorbellReconnect records a reconnection of the doorbell listener.
func (m *Metrics) DoorbellReconnect() { m.doorbellReconn.Inc() }

// FanoutRead records one hub read.
func (m *Metrics) FanoutRead(int) { m.fanoutReads.Inc() }

// Gauge registers a gauge whose value is read at scrape time.
func (m *Metrics) Gauge(name, help string, value func() float64) {
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, value))
}

// OutboxBacklog registers tocsin_outbox_backlog, counted at scrape time (one query per
// scrape, bounded by a timeout; -1 when the database does not answer).
func (m *Metrics) OutboxBacklog(pool *pgxpool.Pool) {
	m.Gauge("tocsin_outbox_backlog", "Outbox rows not yet sequenced.", func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var n int64
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM tocsin.outbox`).Scan(&n); err != nil {
			return -1
		}
		return float64(n)
	})
}

// CounterFuncs registers a counter family whose values are read at scrape time, one
// function per label value.
func (m *Metrics) CounterFuncs(name, help, label string, values map[string]func() float64) {
	m.registry.MustRegister(&funcCollector{desc: prometheus.NewDesc(name, help, []string{label}, nil),
		kind: prometheus.CounterValue, values: values})
}

// GaugeFuncs is CounterFuncs for gauges.
func (m *Metrics) GaugeFuncs(name, help, label string, values map[string]func() float64) {
	m.registry.MustRegister(&funcCollector{desc: prometheus.NewDesc(name, help, []string{label}, nil),
		kind: prometheus.GaugeValue, values: values})
}

type funcCollector struct {
	desc   *prometheus.Desc
	kind   prometheus.ValueType
	values map[string]func() float64
}

func (c *funcCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *funcCollector) Collect(ch chan<- prometheus.Metric) {
	for label, f := range c.values {
		ch <- prometheus.MustNewConstMetric(c.desc, c.kind, f(), label)
	}
}
