package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sync/errgroup"

	"github.com/tocsin/tocsin/internal/routes"
)

// errNoRoutes ends a session when the last replication route is gone.
var errNoRoutes = errors.New("no replication route left")

// item is one decoded message with its place in the session.
type item struct {
	msg pglogrepl.Message
	seq uint64
	// sentAt (server clock) and receivedAt are when the message left the server and when
	// it was read.
	sentAt, receivedAt time.Time
}

// progress is what the applier tells the receiver: everything up to message doneSeq is
// durable (or needed no write), and the source WAL up to durable can be confirmed.
type progress struct {
	durable atomic.Uint64 // pglogrepl.LSN
	doneSeq atomic.Uint64
}

// stream runs one replication session: a receiver (the only user of the replication
// connection: it reads and sends status updates) and an applier (writes the outbox on
// conn), joined by a bounded channel.
func (c *Consumer) stream(ctx context.Context, conn *pgx.Conn, slot string) error {
	var applied, confirmed pglogrepl.LSN
	var enabled bool
	err := conn.QueryRow(ctx, replicationStreamStartSQL, slot).Scan(&applied, &confirmed, &enabled)
	if err != nil {
		return fmt.Errorf("reading the state of slot %q: %w", slot, err)
	}
	router, err := loadRouter(ctx, conn)
	if err != nil {
		return err
	}
	rconn, err := c.connectReplication(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = rconn.Close(context.WithoutCancel(ctx)) }()
	err = pglogrepl.StartReplication(ctx, rconn, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '2'", fmt.Sprintf("publication_names '%s'", routes.Publication)}})
	if err != nil {
		return fmt.Errorf("starting replication from slot %q: %w", slot, err)
	}
	c.log.Info("capture streaming", slog.String("slot", slot), slog.String("confirmed_lsn", confirmed.String()),
		slog.String("applied_lsn", applied.String()), slog.Bool("capture_enabled", enabled))
	c.setLeader(true, true)
	defer c.setLeader(true, false)

	var prog progress
	prog.durable.Store(uint64(confirmed))
	ch := make(chan item, 256)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.receive(gctx, rconn, ch, &prog, confirmed) })
	a := &applier{c: c, conn: conn, router: router, enabled: enabled, applied: applied, acks: acks{prog: &prog},
		types: newTypeCache(), relations: map[uint32]*relation{}, slot: slot, endLSN: confirmed}
	g.Go(func() error { return a.run(gctx, ch) })
	err = g.Wait()
	if errors.Is(err, errNoRoutes) {
		c.log.Info("capture stopped streaming: no replication route left")
		return nil
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// loadRouter reads the installed replication routes.
func loadRouter(ctx context.Context, conn *pgx.Conn) (*routes.Router, error) {
	rows, err := conn.Query(ctx, routeReplicationSpecsSQL)
	if err != nil {
		return nil, fmt.Errorf("reading replication routes: %w", err)
	}
	specs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, fmt.Errorf("reading replication routes: %w", err)
	}
	rt := routes.NewRouter()
	for _, b := range specs {
		var s routes.Spec
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("decoding a replication route: %w", err)
		}
		rt.Set(s)
	}
	return rt, nil
}

// connectReplication opens a replication=database connection. Its session renders
// timestamps in ISO format and UTC, which decoding relies on.
func (c *Consumer) connectReplication(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(c.cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("parsing the database URL: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = "tocsin-capture"
	cfg.RuntimeParams["TimeZone"] = "UTC"
	cfg.RuntimeParams["DateStyle"] = "ISO, MDY"
	cfg.RuntimeParams["IntervalStyle"] = "postgres"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening the replication connection: %w", err)
	}
	return conn, nil
}

// receive reads the stream into ch and sends standby status updates: at least every
// StatusInterval, at once when the server asks, and on keepalives, which it may confirm
// in full when everything received so far is durable and no transaction is open (so a
// quiet database does not pin WAL).
func (c *Consumer) receive(ctx context.Context, rconn *pgconn.PgConn, ch chan<- item, prog *progress, confirmed pglogrepl.LSN) error {
	ack := confirmed
	var sent uint64
	inTxn := false
	next := time.Now()
	var recv receiveDeadline
	defer recv.stop()
	for {
		if !time.Now().Before(next) {
			if d := pglogrepl.LSN(prog.durable.Load()); d > ack {
				ack = d
			}
			err := pglogrepl.SendStandbyStatusUpdate(ctx, rconn, pglogrepl.StandbyStatusUpdate{
				WALWritePosition: ack, WALFlushPosition: ack, WALApplyPosition: ack})
			if err != nil {
				return fmt.Errorf("sending a standby status update: %w", err)
			}
			next = time.Now().Add(c.cfg.StatusInterval)
		}
		raw, err := rconn.ReceiveMessage(recv.until(ctx, next))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receiving from the replication stream: %w", err)
		}
		switch m := raw.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				k, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return fmt.Errorf("parsing a keepalive: %w", err)
				}
				if !inTxn && prog.doneSeq.Load() == sent && k.ServerWALEnd > ack {
					ack = k.ServerWALEnd
					next = time.Now()
				}
				if k.ReplyRequested {
					next = time.Now()
				}
			case pglogrepl.XLogDataByteID:
				receivedAt := time.Now()
				x, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return fmt.Errorf("parsing WAL data: %w", err)
				}
				// The receive buffer is reused: decode a copy.
				msg, err := parsePgoutput(append([]byte(nil), x.WALData...))
				if err != nil {
					return fmt.Errorf("decoding a pgoutput message: %w", err)
				}
				switch msg.(type) {
				case *pglogrepl.BeginMessage:
					inTxn = true
				case *pglogrepl.CommitMessage:
					inTxn = false
				}
				sent++
				select {
				case ch <- item{msg: msg, seq: sent, sentAt: x.ServerTime, receivedAt: receivedAt}:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
	}
}

// receiveDeadline is one receive context per status deadline rather than one (and its
// timer) per message.
type receiveDeadline struct {
	ctx    context.Context
	cancel context.CancelFunc
	at     time.Time
}

// until returns a context of parent that ends at at.
func (r *receiveDeadline) until(parent context.Context, at time.Time) context.Context {
	if r.ctx == nil || !r.at.Equal(at) {
		r.stop()
		r.ctx, r.cancel = context.WithDeadline(parent, at)
		r.at = at
	}
	return r.ctx
}

func (r *receiveDeadline) stop() {
	if r.cancel != nil {
		r.cancel()
	}
}
