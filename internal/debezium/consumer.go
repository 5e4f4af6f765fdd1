package debezium

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tocsin/tocsin/internal/feed"
	"github.com/tocsin/tocsin/internal/routes"

	"github.com/tocsin/tocsin/internal/sqlfile"
)

var (
	//go:embed queries.sql
	queriesSQL               string
	queries                  = sqlfile.Parse("debezium/queries.sql", queriesSQL)
	debeziumOffsetAdvanceSQL = queries.Get("debezium_offset_advance")
	routeDebeziumSpecsSQL    = queries.Get("route_debezium_specs")
	debeziumOffsetInitSQL    = queries.Get("debezium_offset_init")
	debeziumOffsetReadSQL    = queries.Get("debezium_offset_read")
	captureEnabledSQL        = queries.Get("capture_enabled")
	debeziumOffsetLockSQL    = queries.Get("debezium_offset_lock")
	debeziumOffsetSkipToSQL  = queries.Get("debezium_offset_skip_to")
	feedEpochSetSQL          = queries.Get("feed_epoch_set")
)

// Config configures a Consumer. Zero values take the defaults below.
type Config struct {
	Kafka Kafka
	// TopicPrefix is Debezium's topic.prefix: route table s.t is read from topic
	// "<TopicPrefix>.s.t".
	TopicPrefix string
	// StartAt is where a partition Tocsin has never read starts: StartEarliest (every
	// retained event) or StartLatest (only what comes next; resolved to a concrete offset
	// and stored before anything is read, so a crash cannot skip ahead).
	StartAt string
	// WakeFunc, when set, is called after outbox rows commit (the sequencer's Wake).
	WakeFunc func()
	// AppliedFunc, when set, is called after each batch commits with the records it
	// covered (tests, benchmarks).
	AppliedFunc func(Applied)
	// RefreshInterval is how often the routes are read again (a route added, changed or
	// removed takes effect within it).
	RefreshInterval time.Duration
	// RetryInterval is the pause after an error before trying again.
	RetryInterval time.Duration
	// MaxPollRecords bounds the records applied in one transaction.
	MaxPollRecords int
}

// Start positions of a partition Tocsin has never read.
const (
	StartEarliest = "earliest"
	StartLatest   = "latest"
)

// Defaults.
const (
	RefreshIntervalDefault = 5 * time.Second
	RetryIntervalDefault   = time.Second
	MaxPollRecordsDefault  = 1000
)

// Applied describes one committed batch.
type Applied struct {
	Records  []*kgo.Record // every record the batch consumed, applied or skipped
	Rows     int           // outbox rows written
	PolledAt time.Time     // when the batch came back from Kafka
}

// PartitionLag is how far one partition's stored position is behind its end.
type PartitionLag struct {
	Topic     string
	Partition int32
	Lag       int64 // high watermark − next offset to apply
}

// Consumer reads the debezium routes' topics and writes their outbox rows.
type Consumer struct {
	cfg  Config
	pool *pgxpool.Pool
	log  *slog.Logger

	skipped sync.Map // reason → *atomic.Int64
	resent  atomic.Int64
	gaps    atomic.Int64

	mu     sync.Mutex
	lag    map[topicPartition]*lagState
	warned map[routes.Table]bool
}

type topicPartition struct {
	topic     string
	partition int32
}

type lagState struct{ hwm, next int64 }

// New returns a Consumer working through pool.
func New(pool *pgxpool.Pool, cfg Config, log *slog.Logger) *Consumer {
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = RefreshIntervalDefault
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = RetryIntervalDefault
	}
	if cfg.MaxPollRecords <= 0 {
		cfg.MaxPollRecords = MaxPollRecordsDefault
	}
	if cfg.StartAt == "" {
		cfg.StartAt = StartEarliest
	}
	if cfg.Kafka.Group == "" {
		cfg.Kafka.Group = "tocsin"
	}
	c := &Consumer{cfg: cfg, pool: pool, log: log, lag: map[topicPartition]*lagState{}, warned: map[routes.Table]bool{}}
	for _, r := range []string{ReasonNotJSON, ReasonNotEnvelope, ReasonUnknownTable} {
		c.skipped.Store(r, new(atomic.Int64))
	}
	return c
}

// Topic returns the topic Debezium writes table t's changes to.
func (c *Consumer) Topic(t routes.Table) string {
	return c.cfg.TopicPrefix + "." + t.Schema + "." + t.Name
}

// Skipped returns the poison messages skipped so far, by reason.
func (c *Consumer) Skipped() map[string]int64 {
	out := map[string]int64{}
	c.skipped.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

// Resent returns how many change events were recognised as Debezium's resends and skipped.
func (c *Consumer) Resent() int64 { return c.resent.Load() }

// Gaps returns how many times a partition's stored offset was found below its log start
// (records deleted before Tocsin read them), each of which changed the feed epoch.
func (c *Consumer) Gaps() int64 { return c.gaps.Load() }

// Lag returns the lag of each partition this member holds, as of its last fetch or its
// last look at the end offsets (every RefreshInterval), sorted. A partition is left out
// until both its end and its stored offset are known.
func (c *Consumer) Lag() []PartitionLag {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]PartitionLag, 0, len(c.lag))
	for tp, l := range c.lag {
		if l.next < 0 || l.hwm < 0 {
			continue
		}
		out = append(out, PartitionLag{Topic: tp.topic, Partition: tp.partition, Lag: max(0, l.hwm-l.next)})
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Topic < out[j].Topic || (out[i].Topic == out[j].Topic && out[i].Partition < out[j].Partition)
	})
	return out
}

// Partitions returns how many partitions this member holds.
func (c *Consumer) Partitions() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lag)
}

// Run consumes until ctx ends. It idles while no debezium route exists and starts a new
// group session whenever the routed topics change or after an error. Missing Kafka
// settings are an error only once a debezium route exists (logged, not fatal: the rest of
// the node keeps running).
func (c *Consumer) Run(ctx context.Context) error {
	var last string
	for {
		err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := c.cfg.RefreshInterval
		var cfgErr *configError
		switch {
		case errors.As(err, &cfgErr):
			if err.Error() != last {
				c.log.Error("debezium routes exist but the Kafka settings are missing or wrong", slog.Any("error", cfgErr.err))
			}
		case err != nil:
			c.log.Warn("debezium consumer stopped; retrying", slog.Any("error", err))
			wait = c.cfg.RetryInterval
		}
		last = ""
		if err != nil {
			last = err.Error()
		}
		if !sleep(ctx, wait) {
			return nil
		}
	}
}

// configError is a configuration problem: nothing to retry until the node is reconfigured.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }

// loadRouter reads the debezium routes and the topics they need, sorted.
func (c *Consumer) loadRouter(ctx context.Context) (*routes.Router, []string, error) {
	rows, err := c.pool.Query(ctx, routeDebeziumSpecsSQL)
	if err != nil {
		return nil, nil, fmt.Errorf("reading debezium routes: %w", err)
	}
	specs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, nil, fmt.Errorf("reading debezium routes: %w", err)
	}
	rt := routes.NewRouter()
	for _, b := range specs {
		var s routes.Spec
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, nil, fmt.Errorf("decoding a debezium route: %w", err)
		}
		rt.Set(s)
	}
	var topics []string
	for _, t := range rt.Tables() {
		topics = append(topics, c.Topic(t))
	}
	slices.Sort(topics)
	return rt, topics, nil
}

// session is one consumer-group membership over a fixed set of topics. It returns nil
// when the topics change (or there are none), an error when a batch could not be applied.
func (c *Consumer) session(ctx context.Context) error {
	router, topics, err := c.loadRouter(ctx)
	if err != nil {
		return err
	}
	if len(topics) == 0 {
		return nil
	}
	if c.cfg.TopicPrefix == "" {
		return &configError{errors.New("TOCSIN_DEBEZIUM_TOPIC_PREFIX: required for debezium routes (Debezium's topic.prefix)")}
	}
	opts, err := c.cfg.Kafka.clientOpts()
	if err != nil {
		return &configError{err}
	}
	// The group may assign partitions before NewClient returns; the offset callback waits
	// for the client it needs for "latest".
	var cl *kgo.Client
	built := make(chan struct{})
	opts = append(opts,
		kgo.WithLogger(kgoLogger{c.log}),
		kgo.ConsumerGroup(c.cfg.Kafka.Group),
		kgo.ConsumeTopics(topics...),
		// Kafka's committed offsets only serve lag monitoring (Tocsin resumes from its own):
		// records are marked once their batch committed and kgo commits the marks in the
		// background, off the path of the next batch.
		kgo.AutoCommitMarks(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// A connector with exactly.once.source.support writes in Kafka transactions: never
		// read what it aborted.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.AdjustFetchOffsetsFn(func(ctx context.Context, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
			select {
			case <-built:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return c.storedOffsets(ctx, cl, assigned)
		}),
		kgo.OnPartitionsRevoked(c.forget),
		kgo.OnPartitionsLost(c.forget),
	)
	if c.cfg.Kafka.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(c.cfg.Kafka.InstanceID))
	}
	if cl, err = kgo.NewClient(opts...); err != nil {
		return fmt.Errorf("creating the Kafka client: %w", err)
	}
	close(built)
	defer cl.CloseAllowingRebalance()
	c.log.Info("debezium consumer joined", slog.String("group", c.cfg.Kafka.Group), slog.Any("topics", topics))

	refreshAt := time.Now().Add(c.cfg.RefreshInterval)
	for {
		pctx, cancel := context.WithDeadline(ctx, refreshAt)
		fetches := cl.PollRecords(pctx, c.cfg.MaxPollRecords)
		polledAt := time.Now()
		cancel()
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				c.log.Warn("fetching from Kafka", slog.String("topic", topic), slog.Int("partition", int(partition)),
					slog.Any("error", err))
			}
		})
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			c.setLag(topicPartition{p.Topic, p.Partition}, p.HighWatermark, -1)
		})
		if err := c.checkDeleted(fetches); err != nil {
			cl.AllowRebalance()
			return err
		}
		if recs := fetches.Records(); len(recs) > 0 {
			if err := c.apply(ctx, router, recs, polledAt); err != nil {
				cl.AllowRebalance()
				return err
			}
			cl.MarkCommitRecords(recs...)
		}
		cl.AllowRebalance()
		if time.Now().After(refreshAt) {
			c.refreshHighWatermarks(ctx, cl, topics)
			next, nextTopics, err := c.loadRouter(ctx)
			if err != nil {
				return err
			}
			if !slices.Equal(nextTopics, topics) {
				c.log.Info("debezium routes changed: rejoining", slog.Any("topics", nextTopics))
				return nil
			}
			router = next
			refreshAt = time.Now().Add(c.cfg.RefreshInterval)
		}
	}
}

// checkDeleted returns an error when a fetch skipped records this member never read: its
// first record of a partition lies past the stored next offset, and so does the log start
// (the client fell below it while running and moved on to it). The next session's
// assignment then finds the gap and resets the feed epoch (resetGaps). Holes that are not
// deletions (transaction markers, compaction) leave the log start at or below the offset.
func (c *Consumer) checkDeleted(fetches kgo.Fetches) error {
	var err error
	seen := map[topicPartition]bool{}
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		tp := topicPartition{p.Topic, p.Partition}
		if err != nil || len(p.Records) == 0 || seen[tp] {
			return
		}
		seen[tp] = true // a later fetch of the partition in this poll follows this one
		next := int64(-1)
		c.mu.Lock()
		if l := c.lag[tp]; l != nil {
			next = l.next
		}
		c.mu.Unlock()
		if next >= 0 && p.Records[0].Offset > next && p.LogStartOffset > next {
			err = fmt.Errorf("%s/%d: the log starts at %d, past the next offset to apply %d (records deleted before they were read); rejoining",
				p.Topic, p.Partition, p.LogStartOffset, next)
		}
	})
	return err
}

// refreshHighWatermarks reads the end offsets of the partitions this member holds, so that
// the lag of a partition with nothing new is exported too. A failure only leaves the lag
// as it was.
func (c *Consumer) refreshHighWatermarks(ctx context.Context, cl *kgo.Client, topics []string) {
	lctx, cancel := context.WithTimeout(ctx, c.cfg.RefreshInterval)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(lctx, topics...)
	if err != nil {
		return
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			return
		}
		tp := topicPartition{o.Topic, o.Partition}
		c.mu.Lock()
		if l := c.lag[tp]; l != nil {
			l.hwm = o.Offset
		}
		c.mu.Unlock()
	})
}

// storedOffsets replaces the offsets Kafka would start from with Tocsin's own: the stored
// next offset of each assigned partition, or the configured start for a partition never
// read (stored first when it is "latest", so that a crash cannot move it).
func (c *Consumer) storedOffsets(ctx context.Context, cl *kgo.Client, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	stored, err := c.readOffsets(ctx, assigned)
	if err != nil {
		return nil, err
	}
	var missing []string
	for t, ps := range assigned {
		for p := range ps {
			if _, ok := stored[topicPartition{t, p}]; !ok && !slices.Contains(missing, t) {
				missing = append(missing, t)
			}
		}
	}
	if len(missing) > 0 && c.cfg.StartAt == StartLatest {
		ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, missing...)
		if err != nil {
			return nil, fmt.Errorf("listing end offsets: %w", err)
		}
		var ts []string
		var ps []int32
		var os []int64
		ends.Each(func(o kadm.ListedOffset) {
			if _, ok := assigned[o.Topic][o.Partition]; ok && o.Err == nil {
				if _, ok := stored[topicPartition{o.Topic, o.Partition}]; !ok {
					ts, ps, os = append(ts, o.Topic), append(ps, o.Partition), append(os, o.Offset)
				}
			}
		})
		if _, err := c.pool.Exec(ctx, debeziumOffsetInitSQL, ts, ps, os); err != nil {
			return nil, fmt.Errorf("storing start offsets: %w", err)
		}
		if stored, err = c.readOffsets(ctx, assigned); err != nil {
			return nil, err
		}
	}
	if err := c.resetGaps(ctx, cl, stored); err != nil {
		return nil, err
	}
	out := map[string]map[int32]kgo.Offset{}
	for t, ps := range assigned {
		out[t] = map[int32]kgo.Offset{}
		for p := range ps {
			if next, ok := stored[topicPartition{t, p}]; ok {
				out[t][p] = kgo.NewOffset().At(next).WithEpoch(-1)
				c.setLag(topicPartition{t, p}, -1, next)
			} else {
				out[t][p] = kgo.NewOffset().AtStart()
				c.setLag(topicPartition{t, p}, -1, -1)
			}
		}
	}
	n := 0
	for _, ps := range out {
		n += len(ps)
	}
	c.log.Info("debezium partitions assigned", slog.Int("partitions", n))
	return out, nil
}

// resetGaps finds the assigned partitions whose stored next offset is below the log start
// offset: Kafka deleted records (retention, DeleteRecords) Tocsin never read, so the feed
// may miss events. In one transaction it changes the feed epoch (every client gets 410
// cursor-expired and refetches) and moves those partitions' stored offsets to the log
// start, where they resume; stored is updated to match.
func (c *Consumer) resetGaps(ctx context.Context, cl *kgo.Client, stored map[topicPartition]int64) error {
	var topics []string
	for tp := range stored {
		if !slices.Contains(topics, tp.topic) {
			topics = append(topics, tp.topic)
		}
	}
	if len(topics) == 0 {
		return nil
	}
	starts, err := kadm.NewClient(cl).ListStartOffsets(ctx, topics...)
	if err != nil {
		return fmt.Errorf("listing start offsets: %w", err)
	}
	if err := starts.Error(); err != nil {
		return fmt.Errorf("listing start offsets: %w", err)
	}
	type gap struct {
		tp            topicPartition
		stored, start int64
	}
	var gaps []gap
	starts.Each(func(o kadm.ListedOffset) {
		tp := topicPartition{o.Topic, o.Partition}
		if next, ok := stored[tp]; ok && next < o.Offset {
			gaps = append(gaps, gap{tp, next, o.Offset})
		}
	})
	if len(gaps) == 0 {
		return nil
	}
	epoch := feed.NewEpoch()
	var moved []gap
	err = pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		moved = moved[:0]
		for _, g := range gaps {
			// Conditional: a member that applied meanwhile moved the offset itself.
			tag, err := tx.Exec(ctx, debeziumOffsetSkipToSQL, g.tp.topic, g.tp.partition, g.start)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 1 {
				moved = append(moved, g)
			}
		}
		if len(moved) == 0 {
			return nil
		}
		_, err := tx.Exec(ctx, feedEpochSetSQL, epoch)
		return err
	})
	if err != nil {
		return fmt.Errorf("resetting the feed epoch after deleted Kafka records: %w", err)
	}
	for _, g := range moved {
		stored[g.tp] = g.start
		c.gaps.Add(1)
		c.log.Error("KAFKA RECORDS DELETED BEFORE TOCSIN READ THEM (retention): events were missed; "+
			"the feed epoch was reset so that every client gets 410 cursor-expired and refetches",
			slog.String("topic", g.tp.topic), slog.Int("partition", int(g.tp.partition)),
			slog.Int64("stored_offset", g.stored), slog.Int64("start_offset", g.start), slog.String("epoch", epoch))
	}
	return nil
}

func (c *Consumer) readOffsets(ctx context.Context, assigned map[string]map[int32]kgo.Offset) (map[topicPartition]int64, error) {
	var topics []string
	for t := range assigned {
		topics = append(topics, t)
	}
	rows, err := c.pool.Query(ctx, debeziumOffsetReadSQL, topics)
	if err != nil {
		return nil, fmt.Errorf("reading stored offsets: %w", err)
	}
	out := map[topicPartition]int64{}
	var t string
	var p int32
	var next int64
	_, err = pgx.ForEachRow(rows, []any{&t, &p, &next}, func() error {
		if _, ok := assigned[t][p]; ok {
			out[topicPartition{t, p}] = next
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading stored offsets: %w", err)
	}
	return out, nil
}

// forget drops the lag of partitions this member no longer owns.
func (c *Consumer) forget(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, ps := range lost {
		for _, p := range ps {
			delete(c.lag, topicPartition{t, p})
		}
	}
}

// setLag records a partition's high watermark and next offset; -1 leaves one unchanged.
func (c *Consumer) setLag(tp topicPartition, hwm, next int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.lag[tp]
	if l == nil {
		l = &lagState{hwm: -1, next: -1}
		c.lag[tp] = l
	}
	if hwm >= 0 {
		l.hwm = hwm
	}
	if next >= 0 {
		l.next = next
	}
}

// warnKeyOnly logs, once per table, that a route needs old values the events lack.
func (c *Consumer) warnKeyOnly(router *routes.Router, e *Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.warned[e.Table] {
		return
	}
	var reasons []string
	for _, s := range router.Specs(e.Table) {
		for _, r := range routes.OldValueReasons(s, e.KeyColumns) {
			reasons = append(reasons, fmt.Sprintf("route %q: %s", s.Name, r))
		}
	}
	if len(reasons) == 0 {
		return
	}
	c.warned[e.Table] = true
	c.log.Warn("debezium events carry only the key in before, but routes need old values: "+
		"set REPLICA IDENTITY FULL on the source table; until then old values are unknown "+
		"(changes to watched columns count as changed, old owners are not reached)",
		slog.String("table", e.Table.String()), slog.String("needed_by", strings.Join(reasons, "; ")))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
