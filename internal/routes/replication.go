package routes

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Publication is the publication replication capture reads. It covers tocsin.route and
// tocsin.setting (so the consumer sees route changes and the capture switch in commit
// order) and exactly the tables of the replication routes.
const Publication = "tocsin"

// DB is what the replication helpers need from a pool, a connection or a transaction.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// slotNameUnsafe matches what may not appear in a slot name.
var slotNameUnsafe = regexp.MustCompile(`[^a-z0-9_]`)

// SlotName returns the replication slot of the connected database: "tocsin_" and the
// database name, lowercased, other characters replaced by "_", at most 63 bytes. Slot names
// are cluster-wide, so every database has its own.
func SlotName(ctx context.Context, db DB) (string, error) {
	var name string
	if err := db.QueryRow(ctx, currentDatabaseSQL).Scan(&name); err != nil {
		return "", fmt.Errorf("reading the database name: %w", err)
	}
	s := "tocsin_" + slotNameUnsafe.ReplaceAllString(strings.ToLower(name), "_")
	return s[:min(len(s), 63)], nil
}

// replicationPrereqs is what the server and the role say about logical replication.
type replicationPrereqs struct {
	walLevel     string
	role         string
	canReplicate bool
}

func loadReplicationPrereqs(ctx context.Context, db DB) (*replicationPrereqs, error) {
	p := &replicationPrereqs{}
	err := db.QueryRow(ctx, replicationPrivilegesSQL).Scan(&p.walLevel, &p.role, &p.canReplicate)
	if err != nil {
		return nil, fmt.Errorf("reading replication settings: %w", err)
	}
	return p, nil
}

// problems returns why capture: replication cannot work here, one sentence each.
func (p *replicationPrereqs) problems() []string {
	var out []string
	if p.walLevel != "logical" {
		out = append(out, fmt.Sprintf("replication needs wal_level = logical, the server has %q "+
			"(set it in postgresql.conf and restart PostgreSQL, or use capture: trigger)", p.walLevel))
	}
	if !p.canReplicate {
		out = append(out, fmt.Sprintf("replication needs a role with the REPLICATION attribute, %q has none "+
			"(ALTER ROLE %s REPLICATION, or use capture: trigger)", p.role, ident(p.role)))
	}
	return out
}

// oldValueReasons says why route r needs the old values of non-key columns, which the
// server sends only under REPLICA IDENTITY FULL. It returns nil when the key suffices.
func oldValueReasons(r *Route, pk []string) []string {
	nonKey := func(cols ...string) bool {
		return slices.ContainsFunc(cols, func(c string) bool { return c != "" && !slices.Contains(pk, c) })
	}
	var out []string
	if r.has(OpUpdate) {
		if len(r.WhenChanged) > 0 {
			out = append(out, "when_changed")
		}
		if r.Payload == PayloadFull && nonKey(r.Columns...) {
			out = append(out, "old values in the payload")
		}
		if nonKey(r.Recipients.Column) {
			out = append(out, "both owners when recipients.column changes")
		}
	}
	if r.has(OpDelete) {
		var cols []string
		cols = append(cols, r.Recipients.Column)
		if r.Recipients.SQL != "" {
			phs, _ := scanPlaceholders(r.Recipients.SQL)
			for _, ph := range phs {
				cols = append(cols, ph.name)
			}
		}
		if nonKey(cols...) {
			out = append(out, "recipients read from a non-key column on delete")
		}
		if r.Payload == PayloadFull && nonKey(r.Columns...) {
			out = append(out, "old values in the payload on delete")
		}
		if r.Group != nil && nonKey(r.Group.By...) {
			out = append(out, "group.by read from a non-key column on delete")
		}
	}
	return out
}

// OldValueReasons says why the route stored as s needs the old values of columns outside
// key, one phrase each; nil when the key suffices. Debezium capture warns with it when its
// events carry only the key (the source table's REPLICA IDENTITY is not FULL).
func OldValueReasons(s Spec, key []string) []string {
	r := Route{On: s.On, Payload: s.Payload, Columns: s.Columns, WhenChanged: s.WhenChanged,
		Recipients: Recipients{Column: s.Recipients.Column, SQL: s.Recipients.SQL, Static: s.Recipients.Static}}
	if s.Group != nil {
		r.Group = &Group{By: s.Group.By}
	}
	return oldValueReasons(&r, key)
}

// syncReplication sets REPLICA IDENTITY FULL where a replication route needs old values
// and makes the publication cover exactly the replication routes' tables. It returns what
// it changed, one sentence each.
func syncReplication(ctx context.Context, tx pgx.Tx, f *File, tables map[Table]*tableInfo) ([]string, error) {
	var notes []string
	needFull := map[Table][]string{}
	var order []Table
	for i := range f.Routes {
		r := &f.Routes[i]
		if r.Capture != CaptureReplication {
			continue
		}
		if _, seen := needFull[r.Table]; !seen {
			order = append(order, r.Table)
			needFull[r.Table] = nil
		}
		for _, why := range oldValueReasons(r, tables[r.Table].pk) {
			needFull[r.Table] = append(needFull[r.Table], fmt.Sprintf("route %q: %s", r.Name, why))
		}
	}
	if len(order) == 0 {
		return nil, nil // FinishReplication drops the slot and the publication
	}
	slot, err := SlotName(ctx, tx)
	if err != nil {
		return nil, err
	}
	var slotOK, pubOK bool
	err = tx.QueryRow(ctx, replicationSlotAndPublicationSQL, slot, Publication).Scan(&slotOK, &pubOK)
	if err != nil {
		return nil, fmt.Errorf("reading the replication slot: %w", err)
	}
	if !slotOK || !pubOK {
		return nil, fmt.Errorf("replication slot %q or publication %q does not exist: call PrepareReplication before ApplyTx", slot, Publication)
	}
	for _, t := range order {
		if reasons := needFull[t]; len(reasons) > 0 && tables[t].replident != "f" {
			if _, err := tx.Exec(ctx, "ALTER TABLE "+t.sanitize()+" REPLICA IDENTITY FULL"); err != nil {
				return nil, fmt.Errorf("setting REPLICA IDENTITY FULL on %q: %w", t, err)
			}
			notes = append(notes, fmt.Sprintf("set REPLICA IDENTITY FULL on table %q: old values are needed (%s); "+
				"its updates and deletes now log the whole old row", t, strings.Join(reasons, "; ")))
		}
	}
	want := []string{pgx.Identifier{"tocsin", "route"}.Sanitize(), pgx.Identifier{"tocsin", "setting"}.Sanitize()}
	names := []string{"tocsin.route", "tocsin.setting"}
	for _, t := range order {
		want = append(want, t.sanitize())
		names = append(names, t.String())
	}
	slices.Sort(want)
	rows, err := tx.Query(ctx, publicationTablesSQL, Publication)
	if err != nil {
		return nil, fmt.Errorf("reading publication %q: %w", Publication, err)
	}
	have, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (string, error) {
		var t Table
		err := row.Scan(&t.Schema, &t.Name)
		return t.sanitize(), err
	})
	if err != nil {
		return nil, fmt.Errorf("reading publication %q: %w", Publication, err)
	}
	slices.Sort(have)
	if !slices.Equal(have, want) {
		if _, err := tx.Exec(ctx, "ALTER PUBLICATION "+ident(Publication)+" SET TABLE "+strings.Join(want, ", ")); err != nil {
			return nil, fmt.Errorf("updating publication %q: %w", Publication, err)
		}
		notes = append(notes, fmt.Sprintf("publication %q now covers %s", Publication, strings.Join(names, ", ")))
	}
	return notes, nil
}

// PrepareReplication readies what f's replication routes need before their apply
// transaction commits: it checks wal_level and the role, creates the publication, then the
// slot (the publication must exist first, and a slot must be created outside any
// transaction that wrote). A slot created here has its start before the routes commit, so
// no change after that commit is missed. created reports whether it created the slot. It
// does nothing when f has no replication route.
func PrepareReplication(ctx context.Context, pool *pgxpool.Pool, f *File) (created bool, err error) {
	var repl []*Route
	for i := range f.Routes {
		if f.Routes[i].Capture == CaptureReplication {
			repl = append(repl, &f.Routes[i])
		}
	}
	if len(repl) == 0 {
		return false, nil
	}
	conn, err := lockApply(ctx, pool)
	if err != nil {
		return false, err
	}
	defer unlockApply(ctx, conn)
	p, err := loadReplicationPrereqs(ctx, conn)
	if err != nil {
		return false, err
	}
	var errs []error
	for _, r := range repl {
		for _, problem := range p.problems() {
			errs = append(errs, &Error{File: f.Name, Line: r.line("capture"), Route: r.Name, Field: "capture", Err: errors.New(problem)})
		}
	}
	if len(errs) > 0 {
		return false, errors.Join(errs...)
	}
	_, err = conn.Exec(ctx, "CREATE PUBLICATION "+ident(Publication)+" FOR TABLE tocsin.route, tocsin.setting "+
		"WITH (publish = 'insert, update, delete')")
	if err != nil && !isDuplicate(err) {
		return false, fmt.Errorf("creating publication %q: %w", Publication, err)
	}
	slot, err := SlotName(ctx, conn)
	if err != nil {
		return false, err
	}
	return CreateSlot(ctx, conn, slot)
}

// CreateSlot creates the permanent pgoutput slot named slot unless it exists, and records
// it in tocsin.replication_state first, so that losing the slot later is detected. created
// reports whether it created the slot. db must not be inside a transaction that wrote.
func CreateSlot(ctx context.Context, db DB, slot string) (created bool, err error) {
	if _, err := db.Exec(ctx, replicationStateRecordSQL, slot); err != nil {
		return false, fmt.Errorf("recording replication slot %q: %w", slot, err)
	}
	var exists bool
	if err := db.QueryRow(ctx, replicationSlotExistsSQL, slot).Scan(&exists); err != nil {
		return false, fmt.Errorf("reading replication slot %q: %w", slot, err)
	}
	if exists {
		return false, nil
	}
	_, err = db.Exec(ctx, replicationSlotCreateSQL, slot)
	if isDuplicate(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("creating replication slot %q: %w", slot, err)
	}
	return true, nil
}

// DropSlot drops replication slot slot, ending the session that streams from it first.
// dropped is false when there was no such slot.
func DropSlot(ctx context.Context, db DB, slot string) (dropped bool, err error) {
	for attempt := 0; ; attempt++ {
		var pid *int32
		err := db.QueryRow(ctx, replicationSlotActivePidSQL, slot).Scan(&pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("reading replication slot %q: %w", slot, err)
		}
		if pid != nil {
			if _, err := db.Exec(ctx, backendTerminateSQL, *pid); err != nil {
				return false, fmt.Errorf("ending the session streaming from slot %q: %w", slot, err)
			}
		}
		_, err = db.Exec(ctx, replicationSlotDropSQL, slot)
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			return true, nil
		case errors.As(err, &pgErr) && pgErr.Code == "42704": // undefined_object: gone meanwhile
			return false, nil
		case errors.As(err, &pgErr) && pgErr.Code == "55006" && attempt < 50: // object_in_use
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		default:
			return false, fmt.Errorf("dropping replication slot %q: %w", slot, err)
		}
	}
}

// HasReplicationRoutes reports whether an installed route captures by logical
// replication. While one does, the publication and the slot exist and the capture
// consumer streams; when the last goes, FinishReplication retires them.
func HasReplicationRoutes(ctx context.Context, db DB) (bool, error) {
	var routed bool
	if err := db.QueryRow(ctx, routeHasReplicationSQL).Scan(&routed); err != nil {
		return false, fmt.Errorf("looking for replication routes: %w", err)
	}
	return routed, nil
}

// FinishReplication drops the slot, its record and the publication when no replication
// route is installed (after the apply transaction committed). dropped reports whether
// there was anything to drop.
func FinishReplication(ctx context.Context, pool *pgxpool.Pool) (dropped bool, err error) {
	conn, err := lockApply(ctx, pool)
	if err != nil {
		return false, err
	}
	defer unlockApply(ctx, conn)
	routed, err := HasReplicationRoutes(ctx, conn)
	if err != nil || routed {
		return false, err
	}
	var pub bool
	if err := conn.QueryRow(ctx, publicationExistsSQL, Publication).Scan(&pub); err != nil {
		return false, fmt.Errorf("looking for publication %q: %w", Publication, err)
	}
	slot, err := SlotName(ctx, conn)
	if err != nil {
		return false, err
	}
	if dropped, err = DropSlot(ctx, conn, slot); err != nil {
		return false, err
	}
	if _, err := conn.Exec(ctx, replicationStateForgetSQL, slot); err != nil {
		return false, fmt.Errorf("forgetting replication slot %q: %w", slot, err)
	}
	if pub {
		if _, err := conn.Exec(ctx, "DROP PUBLICATION IF EXISTS "+ident(Publication)); err != nil {
			return false, fmt.Errorf("dropping publication %q: %w", Publication, err)
		}
	}
	return dropped || pub, nil
}

// lockApply takes the apply lock on a connection of its own, for the steps that cannot
// run inside the apply transaction.
func lockApply(ctx context.Context, pool *pgxpool.Pool) (*pgxpool.Conn, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("taking the routes apply lock: %w", err)
	}
	if _, err := conn.Exec(ctx, routeApplySessionLockSQL, applyLockKey); err != nil {
		conn.Release()
		return nil, fmt.Errorf("taking the routes apply lock: %w", err)
	}
	return conn, nil
}

func unlockApply(ctx context.Context, conn *pgxpool.Conn) {
	if _, err := conn.Exec(context.WithoutCancel(ctx), routeApplySessionUnlockSQL, applyLockKey); err != nil {
		_ = conn.Hijack().Close(context.WithoutCancel(ctx)) // never hand back a locked session
		return
	}
	conn.Release()
}

// isDuplicate reports a duplicate_object error (the publication or slot exists).
func isDuplicate(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42710"
}
