package capture

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/tocsin/tocsin/internal/outbox"
	"github.com/tocsin/tocsin/internal/routes"
)

// applier turns decoded messages into outbox rows. Source transactions arrive whole and in
// commit order (streaming is off: the server spills big ones to disk). Several of them
// share one Tocsin transaction, committed as soon as no message is waiting (or BatchRows is
// reached), together with the commit LSN of the last one: a replay skips what is ≤ it.
type applier struct {
	c         *Consumer
	conn      *pgx.Conn
	router    *routes.Router
	enabled   bool          // the capture switch, as of the stream's position
	applied   pglogrepl.LSN // commit LSN of the last transaction whose rows committed
	prog      *progress
	types     *typeCache
	relations map[uint32]*relation

	tx      pgx.Tx // open Tocsin transaction, or nil
	buf     []outbox.Row
	txRows  int           // rows in tx, written or buffered
	lastLSN pglogrepl.LSN // commit LSN to record with tx
	commits []Applied     // source transactions in tx, for AppliedFunc
	endLSN  pglogrepl.LSN // end of the last source transaction processed
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
	for {
		var it item
		if a.tx != nil && !a.inTxn {
			select {
			case it = <-ch:
			default:
				if err := a.commit(ctx); err != nil {
					return err
				}
				continue
			}
		} else {
			select {
			case it = <-ch:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := a.handle(ctx, it.msg); err != nil {
			return err
		}
		a.seq = it.seq
		if !a.inTxn && a.tx != nil && a.txRows >= a.c.cfg.BatchRows {
			if err := a.commit(ctx); err != nil {
				return err
			}
		}
		if a.tx == nil && !a.inTxn {
			a.prog.durable.Store(uint64(a.endLSN))
			a.prog.doneSeq.Store(a.seq)
			if a.stop {
				return errNoRoutes
			}
		}
	}
}

func (a *applier) handle(ctx context.Context, msg pglogrepl.Message) error {
	switch m := msg.(type) {
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
	if err := a.begin(ctx); err != nil {
		return err
	}
	rows, err := a.router.Route(ctx, a.tx, ch)
	if err != nil {
		return err
	}
	a.buf = append(a.buf, rows...)
	a.txRows += len(rows)
	a.cur.Rows += len(rows)
	if len(a.buf) >= a.c.cfg.FlushRows {
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

// commit flushes, records the last applied commit LSN and commits, then confirms.
func (a *applier) commit(ctx context.Context) error {
	if err := a.flush(ctx); err != nil {
		return err
	}
	if a.lastLSN > a.applied {
		if _, err := a.tx.Exec(ctx, replicationStateAppliedSQL,
			a.slot, a.lastLSN.String()); err != nil {
			return fmt.Errorf("recording the applied LSN: %w", err)
		}
	}
	if err := a.tx.Commit(ctx); err != nil {
		return fmt.Errorf("committing outbox rows: %w", err)
	}
	a.tx = nil
	if a.lastLSN > a.applied {
		a.applied = a.lastLSN
	}
	a.prog.durable.Store(uint64(a.endLSN))
	a.prog.doneSeq.Store(a.seq)
	if a.txRows > 0 && a.c.cfg.WakeFunc != nil {
		a.c.cfg.WakeFunc()
	}
	a.txRows = 0
	if len(a.commits) > 0 {
		a.c.setApplied(a.commits[len(a.commits)-1].CommitTime)
		if f := a.c.cfg.AppliedFunc; f != nil {
			for _, ap := range a.commits {
				f(ap)
			}
		}
		a.commits = a.commits[:0]
	}
	return nil
}
