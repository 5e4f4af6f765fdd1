// Package metrics holds Tocsin's Prometheus metrics. Services report through small methods
// here (or through the callbacks they already expose), so that no domain package imports
// the Prometheus client.
package metrics

import (
	"context"
	_ "embed"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tocsin/tocsin/internal/feed"

	"github.com/tocsin/tocsin/internal/sqlfile"
)

// Metrics is one node's set of metrics, on a registry of its own.
type Metrics struct {
	registry *prometheus.Registry

	sequenced        prometheus.Counter
	sequencerBatches prometheus.Histogram
	delivered        *prometheus.CounterVec
	deliveryLatency  *prometheus.HistogramVec
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
	m.delivered = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tocsin_events_delivered_total",
		Help: "Events written to clients, by transport (short_poll, long_poll, sse)."}, []string{"transport"})
	m.deliveryLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tocsin_delivery_latency_seconds",
		Help: "Time from an event's capture to its delivery to a client, by transport.", Buckets: latencyBuckets},
		[]string{"transport"})
	m.doorbellReconn = prometheus.NewCounter(prometheus.CounterOpts{Name: "tocsin_doorbell_reconnects_total",
		Help: "Times the doorbell listener reconnected (a NOTIFY may have been missed; the hub looked the head up)."})
	m.fanoutReads = prometheus.NewCounter(prometheus.CounterOpts{Name: "tocsin_hub_fanout_reads_total",
		Help: "Feed reads made by the hub to serve all of this node's waiting clients."})
	m.registry.MustRegister(m.sequenced, m.sequencerBatches, m.delivered, m.deliveryLatency,
		m.doorbellReconn, m.fanoutReads,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	// A scrape while the database is down still reports the node (process, Go, counters);
	// a collector that fails is left out of that scrape instead of failing all of it.
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Batch records one sequencer batch (the sequencer's BatchFunc).
func (m *Metrics) Batch(_ int64, rows int) {
	m.sequenced.Add(float64(rows))
	m.sequencerBatches.Observe(float64(rows))
}

// Delivered records events handed to a client over transport (short_poll, long_poll,
// sse), with their latency since capture.
func (m *Metrics) Delivered(transport string, events []feed.Event) {
	now := time.Now()
	m.delivered.WithLabelValues(transport).Add(float64(len(events)))
	h := m.deliveryLatency.WithLabelValues(transport)
	for _, e := range events {
		h.Observe(now.Sub(e.CreatedAt).Seconds())
	}
}

// DoorbellReconnect records a reconnection of the doorbell listener.
func (m *Metrics) DoorbellReconnect() { m.doorbellReconn.Inc() }

// FanoutRead records one hub read.
func (m *Metrics) FanoutRead(int) { m.fanoutReads.Inc() }

// Gauge registers a gauge whose value is read at scrape time.
func (m *Metrics) Gauge(name, help string, value func() float64) {
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, value))
}

var (
	//go:embed queries.sql
	queriesSQL       string
	queries          = sqlfile.Parse("metrics/queries.sql", queriesSQL)
	outboxBacklogSQL = queries.Get("outbox_backlog")
)

// OutboxBacklog registers tocsin_outbox_backlog and tocsin_outbox_oldest_age_seconds (the
// commit→sequenced lag of the oldest waiting row), read at scrape time with one query
// bounded by a timeout; -1 when the database does not answer.
func (m *Metrics) OutboxBacklog(pool *pgxpool.Pool) {
	m.registry.MustRegister(&outboxCollector{pool: pool,
		backlog: prometheus.NewDesc("tocsin_outbox_backlog", "Outbox rows not yet sequenced.", nil, nil),
		age: prometheus.NewDesc("tocsin_outbox_oldest_age_seconds",
			"Age of the oldest outbox row not yet sequenced (0 when none): the sequencer's lag.", nil, nil)})
}

type outboxCollector struct {
	pool         *pgxpool.Pool
	backlog, age *prometheus.Desc
}

func (c *outboxCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.backlog; ch <- c.age }

func (c *outboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, age := -1.0, -1.0
	_ = c.pool.QueryRow(ctx, outboxBacklogSQL).Scan(&n, &age)
	ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, n)
	ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, age)
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

// CounterFunc registers a counter whose value is read at scrape time.
func (m *Metrics) CounterFunc(name, help string, value func() float64) {
	m.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, value))
}

// GaugeVecFunc registers a gauge family with several labels whose samples are read at
// scrape time: collect calls emit once per sample, with one value per label.
func (m *Metrics) GaugeVecFunc(name, help string, labels []string, collect func(emit func(v float64, labelValues ...string))) {
	m.registry.MustRegister(&vecCollector{desc: prometheus.NewDesc(name, help, labels, nil), collect: collect})
}

type vecCollector struct {
	desc    *prometheus.Desc
	collect func(emit func(v float64, labelValues ...string))
}

func (c *vecCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *vecCollector) Collect(ch chan<- prometheus.Metric) {
	c.collect(func(v float64, labelValues ...string) {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, labelValues...)
	})
}

// fqName finds a descriptor's metric name in its description (client_golang keeps it
// unexported).
var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// Names lists the names of every metric registered so far that starts with prefix, sorted
// (the README's metrics table is checked against them).
func (m *Metrics) Names(prefix string) []string {
	descs := make(chan *prometheus.Desc)
	go func() {
		m.registry.Describe(descs)
		close(descs)
	}()
	seen := map[string]bool{}
	for d := range descs {
		if sub := fqName.FindStringSubmatch(d.String()); sub != nil && strings.HasPrefix(sub[1], prefix) {
			seen[sub[1]] = true
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
