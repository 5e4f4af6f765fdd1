package debezium

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tocsin/tocsin/internal/outbox"
	"github.com/tocsin/tocsin/internal/routes"
)

// partitionState is a partition's row of tocsin.debezium_offset, as the batch moves it.
type partitionState struct {
	next   int64
	pos    Position
	hasPos bool
	keys   []string // message keys applied at exactly pos
}

// seen reports whether e was applied before: its position is below the partition's last,
// or equal to it with a key already applied there. It records e otherwise.
func (s *partitionState) seen(e *Event) bool {
	if s.hasPos {
		if e.Pos.Less(s.pos) || (e.Pos == s.pos && slices.Contains(s.keys, e.Key)) {
			return true
		}
		if e.Pos == s.pos {
			s.keys = append(s.keys, e.Key)
			return false
		}
	}
	s.pos, s.hasPos, s.keys = e.Pos, true, []string{e.Key}
	return false
}

// apply writes the outbox rows of recs and every touched partition's new position in one
// transaction. Records below a partition's stored next offset were applied before (by
// this member before a retry, or by another during a rebalance) and are skipped.
func (c *Consumer) apply(ctx context.Context, router *routes.Router, recs []*kgo.Record, polledAt time.Time) error {
	var written int
	states := map[topicPartition]*partitionState{}
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		var err error
		var enabled bool
		if states, enabled, err = lockPartitions(ctx, tx, recs); err != nil {
			return err
		}
		var out []outbox.Row
		for _, r := range recs {
			st := states[topicPartition{r.Topic, r.Partition}]
			if r.Offset < st.next {
				continue
			}
			st.next = r.Offset + 1
			ch, err := c.decode(router, st, r)
			if err != nil {
				return err
			}
			if ch == nil || !enabled {
				continue
			}
			rows, err := router.Route(ctx, tx, ch)
			if err != nil {
				return fmt.Errorf("routing %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
			}
			out = append(out, rows...)
		}
		if err := outbox.InsertTx(ctx, tx, out); err != nil {
			return err
		}
		written = len(out)
		return storePartitions(ctx, tx, states)
	})
	if err != nil {
		return fmt.Errorf("applying %d Kafka records: %w", len(recs), err)
	}
	for tp, st := range states {
		c.setLag(tp, -1, st.next)
	}
	if written > 0 && c.cfg.WakeFunc != nil {
		c.cfg.WakeFunc()
	}
	if f := c.cfg.AppliedFunc; f != nil {
		f(Applied{Records: recs, Rows: written, PolledAt: polledAt})
	}
	return nil
}

// decode returns the change of record r, or nil for what is skipped: tombstones,
// truncates and messages, Debezium's resends, and poison (logged at ERROR and counted).
func (c *Consumer) decode(router *routes.Router, st *partitionState, r *kgo.Record) (*routes.Change, error) {
	e, err := Decode(r.Key, r.Value)
	if err == nil && e != nil && e.Op != 't' && e.Op != 'm' && !router.Routes(e.Table) {
		err = poison(ReasonUnknownTable, "no debezium route for table %q", e.Table)
	}
	var p *PoisonError
	if errors.As(err, &p) {
		c.log.Error("skipping a Kafka record that is not a usable Debezium change event",
			slog.String("topic", r.Topic), slog.Int("partition", int(r.Partition)), slog.Int64("offset", r.Offset),
			slog.String("reason", p.Reason), slog.String("error", p.Err.Error()))
		if n, ok := c.skipped.Load(p.Reason); ok {
			n.(*atomic.Int64).Add(1)
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if e == nil {
		return nil, nil // a tombstone: compaction's marker after a delete
	}
	ch := e.Change()
	if ch == nil {
		return nil, nil
	}
	if e.HasPos && !ch.Snapshot && st.seen(e) {
		c.resent.Add(1)
		return nil, nil
	}
	if e.BeforeKeyOnly {
		c.warnKeyOnly(router, e)
	}
	return ch, nil
}

// lockPartitions creates the missing rows of recs' partitions and locks them all, in a
// fixed order, returning their state and the capture switch (one round trip).
func lockPartitions(ctx context.Context, tx pgx.Tx, recs []*kgo.Record) (map[topicPartition]*partitionState, bool, error) {
	first := map[topicPartition]int64{}
	var order []topicPartition
	for _, r := range recs {
		tp := topicPartition{r.Topic, r.Partition}
		if _, ok := first[tp]; !ok {
			first[tp] = r.Offset
			order = append(order, tp)
		}
	}
	slices.SortFunc(order, func(a, b topicPartition) int {
		if a.topic != b.topic {
			if a.topic < b.topic {
				return -1
			}
			return 1
		}
		return int(a.partition - b.partition)
	})
	ts, ps, os := make([]string, len(order)), make([]int32, len(order)), make([]int64, len(order))
	for i, tp := range order {
		ts[i], ps[i], os[i] = tp.topic, tp.partition, first[tp]
	}
	b := &pgx.Batch{}
	b.Queue(debeziumOffsetInitSQL, ts, ps, os)
	b.Queue(captureEnabledSQL)
	b.Queue(debeziumOffsetLockSQL, ts, ps)
	br := tx.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, false, fmt.Errorf("recording partitions: %w", err)
	}
	var enabled bool
	if err := br.QueryRow().Scan(&enabled); err != nil {
		return nil, false, fmt.Errorf("reading the capture switch: %w", err)
	}
	rows, err := br.Query()
	if err != nil {
		return nil, false, fmt.Errorf("locking partitions: %w", err)
	}
	states := map[topicPartition]*partitionState{}
	var t string
	var p int32
	var next int64
	var commit, lsn *int64
	var keys []byte
	_, err = pgx.ForEachRow(rows, []any{&t, &p, &next, &commit, &lsn, &keys}, func() error {
		st := &partitionState{next: next}
		if commit != nil && lsn != nil {
			st.pos, st.hasPos = Position{Commit: *commit, LSN: *lsn}, true
			if err := json.Unmarshal(keys, &st.keys); err != nil {
				return fmt.Errorf("decoding last_keys of %s/%d: %w", t, p, err)
			}
		}
		states[topicPartition{t, p}] = st
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("locking partitions: %w", err)
	}
	if len(states) != len(order) {
		return nil, false, fmt.Errorf("locking partitions: %d of %d rows found", len(states), len(order))
	}
	return states, enabled, br.Close()
}

// storePartitions writes the partitions' new positions.
func storePartitions(ctx context.Context, tx pgx.Tx, states map[topicPartition]*partitionState) error {
	n := len(states)
	ts, ps, nexts := make([]string, 0, n), make([]int32, 0, n), make([]int64, 0, n)
	commits, lsns, keys := make([]*int64, 0, n), make([]*int64, 0, n), make([]string, 0, n)
	for tp, st := range states {
		ts, ps, nexts = append(ts, tp.topic), append(ps, tp.partition), append(nexts, st.next)
		k := []string{}
		var commit, lsn *int64
		if st.hasPos {
			commit, lsn, k = &st.pos.Commit, &st.pos.LSN, st.keys
		}
		b, _ := json.Marshal(k)
		commits, lsns, keys = append(commits, commit), append(lsns, lsn), append(keys, string(b))
	}
	_, err := tx.Exec(ctx, debeziumOffsetAdvanceSQL, ts, ps, nexts, commits, lsns, keys)
	if err != nil {
		return fmt.Errorf("storing partition offsets: %w", err)
	}
	return nil
}
