package capture

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/tocsin/tocsin/internal/outbox"
	"github.com/tocsin/tocsin/internal/routes"
)

// applier turns decoded messages into outbox rows. Source transactions arrive whole and in
// commit order (streaming is off: the server spills big ones to disk). Several of them
// share one Tocsin transaction, committed as soon as no message is waiting (or BatchRows is
// reached), together with the commit LSN of the last one: a replay skips what is ≤ it.
//
// A batch's rows wait in memory and go in one round trip with the applied LSN; only a batch
// that outgrows FlushRows opens its transaction early and writes its rows as they come.
// Each round trip is a wake-up of the consumer's backend and of this process, and on a
// busy machine each wake-up may wait for a core. The transaction commits without waiting
// for the WAL flush; the slot is confirmed only past what is flushed (see acks).
type applier struct {
	c         *Consumer
	conn      *pgx.Conn
	router    *routes.Router
	enabled   bool          // the capture switch, as of the stream's position
	applied   pglogrepl.LSN // commit LSN of the last transaction whose rows committed
	acks      acks
	types     *typeCache
	relations map[uint32]*relation

	tx      pgx.Tx // open Tocsin transaction (a batch larger than FlushRows), or nil
	buf     []outbox.Row
	txRows  int           // rows of the batch, written or buffered
	lastLSN pglogrepl.LSN // commit LSN to record with tx
	commits []Applied     // source transactions in tx, for AppliedFunc
	endLSN  pglogrepl.LSN // end of the last source transaction processed
	written pglogrepl.LSN // WAL position just after the last Tocsin commit
	seq     uint64        // last message processed
	inTxn   bool          // between Begin and Commit
	skip    bool          // the current source transaction was applied before
	cur     Applied       // the current source transaction
	stop    bool          // the last replication route went: end after this commit
	slot    string
}

func (a *applier) run(ctx context.Context, ch <-chan item) error {
	defer func() {
		if a.tx != nil {
			_ = a.tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	flushCheck := flushCheckIntervalMin
	for {
		var it item
		if a.txRows > 0 && !a.inTxn {
			select {
			case it = <-ch:
			default:
				if err := a.commit(ctx); err != nil {
					return err
				}
				continue
			}
		} else if a.acks.waiting() {
			select {
			case it = <-ch:
				flushCheck = flushCheckIntervalMin
			case <-time.After(flushCheck):
				if err := a.checkFlushed(ctx); err != nil {
					return err
				}
				flushCheck = min(2*flushCheck, a.c.cfg.StatusInterval)
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		} else {
			select {
			case it = <-ch:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := a.handle(ctx, it); err != nil {
			return err
		}
		a.seq = it.seq
		if !a.inTxn && a.txRows >= a.c.cfg.BatchRows {
			if err := a.commit(ctx); err != nil {
				return err
			}
		}
		if a.txRows == 0 && !a.inTxn {
			a.acks.advance(a.written, a.endLSN, a.seq)
			if a.stop {
				return errNoRoutes
			}
		}
	}
}

func (a *applier) handle(ctx context.Context, it item) error {
	switch m := it.msg.(type) {
	case *pglogrepl.RelationMessageV2:
		r, err := newRelation(ctx, a.c.pool, a.types, &m.RelationMessage)
		if err != nil {
			return err
		}
		a.relations[m.RelationID] = r
	case *pglogrepl.BeginMessage:
		a.inTxn = true
		a.skip = m.FinalLSN <= a.applied
		a.cur = Applied{CommitLSN: m.FinalLSN, CommitTime: m.CommitTime}
	case *pglogrepl.InsertMessageV2:
		return a.change(ctx, m.RelationID, routes.OpInsert, 0, nil, m.Tuple)
	case *pglogrepl.UpdateMessageV2:
		return a.change(ctx, m.RelationID, routes.OpUpdate, m.OldTupleType, m.OldTuple, m.NewTuple)
	case *pglogrepl.DeleteMessageV2:
		return a.change(ctx, m.RelationID, routes.OpDelete, m.OldTupleType, m.OldTuple, nil)
	case *pglogrepl.CommitMessage:
		a.inTxn = false
		a.endLSN = m.TransactionEndLSN
		if !a.skip && a.cur.Rows > 0 {
			a.cur.SentAt, a.cur.ReceivedAt = it.sentAt, it.receivedAt
			a.lastLSN = m.CommitLSN
			a.commits = append(a.commits, a.cur)
		}
		a.skip = false
	}
	// Truncate, type and origin messages change nothing: routes fire on rows.
	return nil
}

// change routes one row change into the buffer.
func (a *applier) change(ctx context.Context, relID uint32, op routes.Op, oldType uint8, oldTuple, newTuple *pglogrepl.TupleData) error {
	if a.skip {
		return nil
	}
	rel, ok := a.relations[relID]
	if !ok {
		return fmt.Errorf("change for unknown relation %d", relID)
	}
	ch := rel.change(op, oldType, oldTuple, newTuple)
	switch rel.table {
	case routes.Table{Schema: "tocsin", Name: "route"}:
		return a.routeChanged(ctx, ch)
	case routes.Table{Schema: "tocsin", Name: "setting"}:
		a.settingChanged(ch)
		return nil
	}
	if !a.enabled || !a.router.Routes(rel.table) {
		return nil
	}
	// Recipient queries read committed state, in the open transaction or outside any.
	var q routes.Querier = a.conn
	if a.tx != nil {
		q = a.tx
	}
	rows, err := a.router.Route(ctx, q, ch)
	if err != nil {
		return err
	}
	a.buf = append(a.buf, rows...)
	a.txRows += len(rows)
	a.cur.Rows += len(rows)
	if len(a.buf) >= a.c.cfg.FlushRows {
		if err := a.begin(ctx); err != nil {
			return err
		}
		return a.flush(ctx)
	}
	return nil
}

// routeChanged follows `tocsin routes apply` at its exact place in the stream.
func (a *applier) routeChanged(ctx context.Context, ch *routes.Change) error {
	if ch.Op == routes.OpDelete {
		a.router.Remove(ch.Old["name"].Text)
	} else {
		name := ch.New["name"].Text
		capture := ch.New["capture"].Text
		spec, ok := ch.New["spec"]
		if capture != string(routes.CaptureReplication) {
			a.router.Remove(name)
		} else {
			raw := []byte(spec.Text)
			if !ok { // an unchanged TOASTed spec: read it
				if err := a.c.pool.QueryRow(ctx, routeSpecSQL, name).Scan(&raw); err != nil {
					return fmt.Errorf("reading route %q: %w", name, err)
				}
			}
			var s routes.Spec
			if err := json.Unmarshal(raw, &s); err != nil {
				return fmt.Errorf("decoding route %q: %w", name, err)
			}
			a.router.Set(s)
		}
	}
	a.stop = a.router.Len() == 0
	a.c.log.Info("capture routes changed", slog.Int("routes", a.router.Len()))
	return nil
}

// settingChanged follows the capture switch at its exact place in the stream.
func (a *applier) settingChanged(ch *routes.Change) {
	row := ch.New
	if ch.Op == routes.OpDelete {
		row = ch.Old
	}
	if row["key"].Text != "capture" {
		return
	}
	enabled := ch.Op == routes.OpDelete || row["value"].Text == "true"
	if enabled != a.enabled {
		a.enabled = enabled
		a.c.log.Info("capture switched", slog.Bool("capture_enabled", enabled))
	}
}

func (a *applier) begin(ctx context.Context) error {
	if a.tx != nil {
		return nil
	}
	tx, err := a.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("beginning a capture transaction: %w", err)
	}
	a.tx = tx
	if _, err := tx.Exec(ctx, captureCommitAsyncSQL); err != nil {
		return fmt.Errorf("beginning a capture transaction: %w", err)
	}
	return nil
}

// flush writes the buffered rows into the open transaction, in order.
func (a *applier) flush(ctx context.Context) error {
	if len(a.buf) == 0 {
		return nil
	}
	if err := outbox.InsertTx(ctx, a.tx, a.buf); err != nil {
		return err
	}
	a.buf = a.buf[:0]
	return nil
}

// commit writes the buffered rows and the last applied commit LSN in one transaction that
// does not wait for the WAL flush, reads the WAL positions after it, and hands the
// receiver what is flushed. With no transaction open yet that is one round trip.
func (a *applier) commit(ctx context.Context) error {
	writeAt := time.Now()
	b := &pgx.Batch{}
	if a.tx == nil {
		b.Queue("BEGIN")
		b.Queue(captureCommitAsyncSQL)
	}
	if err := outbox.QueueInsert(b, a.buf); err != nil {
		return err
	}
	if a.lastLSN > a.applied {
		b.Queue(replicationStateAppliedSQL, a.slot, a.lastLSN.String())
	}
	var written, flushed pglogrepl.LSN
	positions := func(row pgx.Row) error {
		if err := row.Scan(&written, &flushed); err != nil {
			return fmt.Errorf("reading the WAL positions: %w", err)
		}
		return nil
	}
	if a.tx == nil {
		// A failure leaves the connection in an aborted transaction; the session ends and
		// leadership closes it.
		b.Queue("COMMIT")
		b.Queue(walPositionsSQL).QueryRow(positions)
		if err := a.conn.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("committing %d outbox rows: %w", a.txRows, err)
		}
	} else {
		if err := a.tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("writing %d outbox rows: %w", len(a.buf), err)
		}
		if err := a.tx.Commit(ctx); err != nil {
			return fmt.Errorf("committing outbox rows: %w", err)
		}
		a.tx = nil
		if err := positions(a.conn.QueryRow(ctx, walPositionsSQL)); err != nil {
			return err
		}
	}
	a.buf = a.buf[:0]
	committedAt := time.Now()
	a.written = written
	a.acks.flushedTo(flushed)
	a.acks.advance(a.written, a.endLSN, a.seq)
	if a.lastLSN > a.applied {
		a.applied = a.lastLSN
	}
	if a.txRows > 0 && a.c.cfg.WakeFunc != nil {
		a.c.cfg.WakeFunc()
	}
	a.txRows = 0
	if len(a.commits) > 0 {
		a.c.setApplied(a.commits[len(a.commits)-1].CommitTime)
		if f := a.c.cfg.AppliedFunc; f != nil {
			for _, ap := range a.commits {
				ap.WriteAt, ap.CommittedAt = writeAt, committedAt
				f(ap)
			}
		}
		a.commits = a.commits[:0]
	}
	return nil
}

// flushCheckIntervalMin is the first pause before the applier, idle with progress waiting
// for the WAL flush, asks the server how far it flushed; each further check waits twice as
// long, up to StatusInterval. The WAL writer flushes within a few wal_writer_delay (200ms
// by default), and any durable commit on the server flushes it sooner.
const flushCheckIntervalMin = 10 * time.Millisecond

// checkFlushed reads the server's WAL flush position and hands the receiver what it covers.
func (a *applier) checkFlushed(ctx context.Context) error {
	var flushed pglogrepl.LSN
	if err := a.conn.QueryRow(ctx, walFlushSQL).Scan(&flushed); err != nil {
		return fmt.Errorf("reading the WAL flush position: %w", err)
	}
	a.acks.flushedTo(flushed)
	return nil
}
