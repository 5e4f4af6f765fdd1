package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tocsin/tocsin/internal/feed"
	"github.com/tocsin/tocsin/internal/routes"
)

// Status is what the consumer and its slot look like, for metrics and health.
type Status struct {
	Slot      string
	Leader    bool // this node holds capture leadership
	Streaming bool // this node is streaming from the slot
	// WALStatus is pg_replication_slots.wal_status (reserved, extended, unreserved, lost);
	// "" when the slot does not exist.
	WALStatus string
	// RetainedBytes is the WAL the slot holds back: pg_current_wal_lsn() - restart_lsn.
	RetainedBytes int64
	// LagBytes is the WAL not yet confirmed: pg_current_wal_lsn() - confirmed_flush_lsn.
	LagBytes int64
	// LastCommitAt is the source commit time of the last transaction this node applied.
	LastCommitAt time.Time
	// CheckedAt is when the slot was last measured.
	CheckedAt time.Time
}

// Status returns the latest measurements (refreshed every MonitorInterval).
func (c *Consumer) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

func (c *Consumer) setLeader(leader, streaming bool) {
	c.mu.Lock()
	c.status.Leader, c.status.Streaming = leader, streaming
	c.mu.Unlock()
}

func (c *Consumer) setApplied(at time.Time) {
	c.mu.Lock()
	c.status.LastCommitAt = at
	c.mu.Unlock()
}

// slotState is one reading of the slot.
type slotState struct {
	slot      string
	routed    bool
	exists    bool
	walStatus string
	retained  int64
	lag       int64
}

func (c *Consumer) readSlot(ctx context.Context) (slotState, error) {
	var s slotState
	slot, err := routes.SlotName(ctx, c.pool)
	if err != nil {
		return s, err
	}
	s.slot = slot
	var walStatus *string
	var retained, lag *int64
	if s.routed, err = routes.HasReplicationRoutes(ctx, c.pool); err != nil {
		return s, err
	}
	err = c.pool.QueryRow(ctx, replicationSlotHealthSQL, slot).
		Scan(&s.exists, &walStatus, &retained, &lag)
	if err != nil {
		return s, fmt.Errorf("reading replication slot %q: %w", slot, err)
	}
	if walStatus != nil {
		s.walStatus = *walStatus
	}
	if retained != nil {
		s.retained = *retained
	}
	if lag != nil {
		s.lag = *lag
	}
	return s, nil
}

// monitor measures the slot every MonitorInterval and warns past SlotWALWarnBytes.
func (c *Consumer) monitor(ctx context.Context) {
	for {
		if s, err := c.readSlot(ctx); err == nil {
			c.mu.Lock()
			c.status.Slot, c.status.WALStatus = s.slot, s.walStatus
			c.status.RetainedBytes, c.status.LagBytes, c.status.CheckedAt = s.retained, s.lag, time.Now()
			over := s.retained > c.cfg.SlotWALWarnBytes
			crossed := over != c.warned
			c.warned = over
			c.mu.Unlock()
			switch {
			case crossed && over:
				c.log.Warn("replication slot retains too much WAL: capture is down or lagging; "+
					"max_slot_wal_keep_size bounds it (past it the slot is invalidated and clients refetch)",
					slog.String("slot", s.slot), slog.Int64("retained_bytes", s.retained),
					slog.Int64("warn_bytes", c.cfg.SlotWALWarnBytes), slog.String("wal_status", s.walStatus))
			case crossed:
				c.log.Info("replication slot back under its WAL warning threshold",
					slog.String("slot", s.slot), slog.Int64("retained_bytes", s.retained))
			}
		} else if ctx.Err() == nil {
			c.log.Warn("measuring the replication slot", slog.Any("error", err))
		}
		if !sleep(ctx, c.cfg.MonitorInterval) {
			return
		}
	}
}

// ErrSlotUnhealthy is returned by Ready when the slot is lost, missing while replication
// routes exist, or retains more WAL than SlotWALWarnBytes.
var ErrSlotUnhealthy = errors.New("replication slot unhealthy")

// Ready returns nil unless replication routes exist and their slot is missing, lost, or
// retains more than SlotWALWarnBytes of WAL. It reads the slot afresh.
func (c *Consumer) Ready(ctx context.Context) error {
	s, err := c.readSlot(ctx)
	switch {
	case err != nil:
		return err
	case !s.routed:
		return nil
	case !s.exists:
		return fmt.Errorf("%w: slot %q does not exist", ErrSlotUnhealthy, s.slot)
	case s.walStatus == "lost":
		return fmt.Errorf("%w: slot %q was invalidated (wal_status lost)", ErrSlotUnhealthy, s.slot)
	case s.retained > c.cfg.SlotWALWarnBytes:
		return fmt.Errorf("%w: slot %q retains %d bytes of WAL (threshold %d)", ErrSlotUnhealthy, s.slot, s.retained, c.cfg.SlotWALWarnBytes)
	}
	return nil
}

// ensureSlot makes sure the slot exists and is usable. A slot that is recorded in
// tocsin.replication_state but missing or invalidated was lost: changes were missed, so
// it is recreated and the feed epoch bumped (clients get 410 and refetch). The intent is
// recorded first (reset_pending), so a crash halfway still ends in a bump.
func (c *Consumer) ensureSlot(ctx context.Context, conn *pgx.Conn) (string, error) {
	s, err := c.readSlot(ctx)
	if err != nil {
		return "", err
	}
	var recorded, pending bool
	err = conn.QueryRow(ctx, replicationStateReadSQL, s.slot).Scan(&recorded, &pending)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("reading the state of slot %q: %w", s.slot, err)
	}
	healthy := s.exists && s.walStatus != "lost"
	switch {
	case healthy && !pending:
		return s.slot, nil
	case !s.exists && !recorded:
		// Never created (or forgotten with the last route): nothing was missed.
		if _, err := routes.CreateSlot(ctx, conn, s.slot); err != nil {
			return "", err
		}
		c.log.Info("created replication slot", slog.String("slot", s.slot))
		return s.slot, nil
	}
	c.log.Error("REPLICATION SLOT LOST: changes were missed; recreating the slot and resetting the feed epoch "+
		"so that every client gets 410 cursor-expired and refetches", slog.String("slot", s.slot),
		slog.Bool("slot_exists", s.exists), slog.String("wal_status", s.walStatus))
	if _, err := conn.Exec(ctx, replicationStateResetPendingSQL, s.slot); err != nil {
		return "", fmt.Errorf("recording the reset of slot %q: %w", s.slot, err)
	}
	if !healthy {
		if s.exists {
			if _, err := routes.DropSlot(ctx, conn, s.slot); err != nil {
				return "", err
			}
		}
		if _, err := routes.CreateSlot(ctx, conn, s.slot); err != nil {
			return "", err
		}
	}
	epoch := feed.NewEpoch()
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, feedEpochSetSQL, epoch); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, replicationStateResetDoneSQL, s.slot)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("resetting the feed epoch: %w", err)
	}
	c.log.Error("replication slot recreated and feed epoch reset", slog.String("slot", s.slot), slog.String("epoch", epoch))
	return s.slot, nil
}
