package routes

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tocsin/tocsin/internal/sqlfile"
)

var (
	//go:embed queries.sql
	queriesSQL                       string
	queries                          = sqlfile.Parse("routes/queries.sql", queriesSQL)
	routeApplyLockSQL                = queries.Get("route_apply_lock")
	searchPathSQL                    = queries.Get("search_path")
	routeNamesSQL                    = queries.Get("route_names")
	routeUnchangedSQL                = queries.Get("route_unchanged")
	routeUpsertSQL                   = queries.Get("route_upsert")
	routeDeleteSQL                   = queries.Get("route_delete")
	routeFunctionTriggersSQL         = queries.Get("route_function_triggers")
	currentDatabaseSQL               = queries.Get("current_database")
	replicationPrivilegesSQL         = queries.Get("replication_privileges")
	replicationSlotAndPublicationSQL = queries.Get("replication_slot_and_publication")
	publicationTablesSQL             = queries.Get("publication_tables")
	replicationStateRecordSQL        = queries.Get("replication_state_record")
	replicationSlotExistsSQL         = queries.Get("replication_slot_exists")
	replicationSlotCreateSQL         = queries.Get("replication_slot_create")
	replicationSlotActivePidSQL      = queries.Get("replication_slot_active_pid")
	backendTerminateSQL              = queries.Get("backend_terminate")
	replicationSlotDropSQL           = queries.Get("replication_slot_drop")
	routeHasReplicationSQL           = queries.Get("route_has_replication")
	publicationExistsSQL             = queries.Get("publication_exists")
	replicationStateForgetSQL        = queries.Get("replication_state_forget")
	routeApplySessionLockSQL         = queries.Get("route_apply_session_lock")
	routeApplySessionUnlockSQL       = queries.Get("route_apply_session_unlock")
	tableDescribeSQL                 = queries.Get("table_describe")
	tableColumnsSQL                  = queries.Get("table_columns")
	searchPathSetSQL                 = queries.Get("search_path_set")
	routeOpRegisterSQL               = queries.Get("route_op_register")
)

// applyLockKey is the advisory lock that serialises applies ("tocsin-r").
const applyLockKey int64 = 0x746f6373696e2d72

// ApplyLockTimeout bounds how long Apply waits for a table lock (CREATE/DROP TRIGGER) behind
// the application's transactions: a long wait would queue every writer of that table behind
// it. On timeout Apply fails and changes nothing; run it again.
const ApplyLockTimeout = 10 * time.Second

// Apply checks f, then installs it in one transaction: it upserts the tocsin.route rows,
// (re)creates each changed trigger route's function and trigger, and removes the routes
// that are no longer in f. Routes whose definition is already installed are not touched,
// so applying the same file twice changes nothing. On any error nothing changes. Concurrent
// applies wait for each other.
//
// Replication routes install no trigger. Around the transaction Apply manages what they
// need (see PrepareReplication and FinishReplication): the publication and the slot exist
// before the routes commit, so no change after the commit is missed, and both go when the
// last replication route goes.
func Apply(ctx context.Context, pool *pgxpool.Pool, f *File) (Summary, error) {
	var s Summary
	created, err := PrepareReplication(ctx, pool, f)
	if err != nil {
		return Summary{}, err
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var err error
		s, err = ApplyTx(ctx, tx, f)
		return err
	})
	if err != nil {
		if created {
			// Leave nothing behind that pins WAL for routes that never committed.
			_, _ = FinishReplication(context.WithoutCancel(ctx), pool)
		}
		return Summary{}, err
	}
	if created {
		s.Notes = append(s.Notes, "created the publication and the replication slot")
	}
	dropped, err := FinishReplication(ctx, pool)
	if err != nil {
		return s, err
	}
	if dropped {
		s.Notes = append(s.Notes, "dropped the replication slot and the publication (no replication route is left)")
	}
	return s, nil
}

// ApplyTx is Apply inside the caller's transaction: its changes commit or roll back with
// it. It holds the apply lock and sets lock_timeout until that transaction ends. When f has
// replication routes, the caller calls PrepareReplication before ApplyTx (ApplyTx fails
// when the slot is missing) and FinishReplication after the commit.
func ApplyTx(ctx context.Context, tx pgx.Tx, f *File) (Summary, error) {
	var s Summary
	if _, err := tx.Exec(ctx, routeApplyLockSQL, applyLockKey); err != nil {
		return s, fmt.Errorf("taking the routes apply lock: %w", err)
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", ApplyLockTimeout.Milliseconds())); err != nil {
		return s, fmt.Errorf("setting lock_timeout: %w", err)
	}
	tables, err := check(ctx, tx, f)
	if err != nil {
		return s, err
	}
	installed, err := installedRoutes(ctx, tx)
	if err != nil {
		return s, err
	}
	var searchPath string
	if err := tx.QueryRow(ctx, searchPathSQL).Scan(&searchPath); err != nil {
		return s, fmt.Errorf("reading search_path: %w", err)
	}
	for i := range f.Routes {
		r := &f.Routes[i]
		pk := tables[r.Table].pk
		sp := newSpec(r, pk)
		if r.Capture != CaptureTrigger && r.Recipients.SQL != "" {
			sp.SearchPath = searchPath
		}
		spec, err := json.Marshal(sp)
		if err != nil {
			return s, fmt.Errorf("encoding route %q: %w", r.Name, err)
		}
		ops, err := registerOps(ctx, tx, r)
		if err != nil {
			return s, err
		}
		body := ""
		if r.Capture == CaptureTrigger {
			body = functionBody(r, pk, ops)
		}
		_, exists := installed[r.Name]
		delete(installed, r.Name)
		if exists {
			same, err := isInstalled(ctx, tx, r, spec, body)
			if err != nil {
				return s, err
			}
			if same {
				s.Unchanged = append(s.Unchanged, r.Name)
				continue
			}
		}
		if err := install(ctx, tx, r, spec, body); err != nil {
			return s, err
		}
		if exists {
			s.Updated = append(s.Updated, r.Name)
		} else {
			s.Created = append(s.Created, r.Name)
		}
	}
	for name := range installed {
		s.Removed = append(s.Removed, name)
	}
	slices.Sort(s.Removed)
	for _, name := range s.Removed {
		if err := uninstall(ctx, tx, name); err != nil {
			return s, err
		}
	}
	notes, err := syncReplication(ctx, tx, f, tables)
	if err != nil {
		return s, err
	}
	s.Notes = append(s.Notes, f.Notes...)
	s.Notes = append(s.Notes, notes...)
	return s, nil
}

// registerOps records each of r's operations in tocsin.route_op (once: an operation
// registered before keeps its id) and returns their ids. Outbox rows name their route's
// constants by these ids: the trigger generator writes them in, and outbox.InsertTx looks
// them up for the rows of replication and Debezium capture.
func registerOps(ctx context.Context, tx pgx.Tx, r *Route) (map[Op]int32, error) {
	ops := make([]string, len(r.On))
	for i, op := range r.On {
		ops[i] = string(op)
	}
	rows, err := tx.Query(ctx, routeOpRegisterSQL, r.Name, ops, r.Topic, string(r.Kind), r.Table.String())
	if err != nil {
		return nil, fmt.Errorf("registering the operations of route %q: %w", r.Name, err)
	}
	out := make(map[Op]int32, len(ops))
	var (
		op string
		id int32
	)
	_, err = pgx.ForEachRow(rows, []any{&op, &id}, func() error {
		out[Op(op)] = id
		return nil
	})
	if err == nil && len(out) != len(ops) {
		err = fmt.Errorf("%d ids for %d operations", len(out), len(ops))
	}
	if err != nil {
		return nil, fmt.Errorf("registering the operations of route %q: %w", r.Name, err)
	}
	return out, nil
}

func installedRoutes(ctx context.Context, tx pgx.Tx) (map[string]bool, error) {
	rows, err := tx.Query(ctx, routeNamesSQL)
	if err != nil {
		return nil, fmt.Errorf("reading installed routes: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("reading installed routes: %w", err)
	}
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out, nil
}

// isInstalled reports whether r is installed exactly as it would be now: same spec, same
// function body, and its trigger in place (someone may have dropped it by hand). A
// replication route (body "") is installed when its spec matches and it has no function.
func isInstalled(ctx context.Context, tx pgx.Tx, r *Route, spec []byte, body string) (bool, error) {
	var same bool
	err := tx.QueryRow(ctx, routeUnchangedSQL,
		r.Name, string(spec), body, functionName(r.Name)+"()", triggerName(r.Name), r.Table.sanitize()).Scan(&same)
	if err != nil {
		return false, fmt.Errorf("comparing route %q with the installed one: %w", r.Name, err)
	}
	return same, nil
}

// install (re)creates r's function and trigger (none for a replication route) and records r.
func install(ctx context.Context, tx pgx.Tx, r *Route, spec []byte, body string) error {
	if body == "" {
		if err := uninstallTrigger(ctx, tx, r.Name); err != nil {
			return err
		}
	} else {
		if _, err := tx.Exec(ctx, createFunctionSQL(r, body)); err != nil {
			return fmt.Errorf("creating the trigger function of route %q: %w", r.Name, err)
		}
		if err := dropTriggers(ctx, tx, r.Name); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, createTriggerSQL(r)); err != nil {
			return fmt.Errorf("creating the trigger of route %q: %w", r.Name, err)
		}
	}
	_, err := tx.Exec(ctx, routeUpsertSQL,
		r.Name, r.Table.String(), string(r.Capture), string(spec))
	if err != nil {
		return fmt.Errorf("recording route %q: %w", r.Name, err)
	}
	return nil
}

// uninstall removes route name's triggers, function and row.
func uninstall(ctx context.Context, tx pgx.Tx, name string) error {
	if err := uninstallTrigger(ctx, tx, name); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, routeDeleteSQL, name); err != nil {
		return fmt.Errorf("removing route %q: %w", name, err)
	}
	return nil
}

// uninstallTrigger removes route name's triggers and function.
func uninstallTrigger(ctx context.Context, tx pgx.Tx, name string) error {
	if err := dropTriggers(ctx, tx, name); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "DROP FUNCTION IF EXISTS "+functionName(name)+"()"); err != nil {
		return fmt.Errorf("dropping the trigger function of route %q: %w", name, err)
	}
	return nil
}

// dropTriggers drops every trigger that calls route name's function, wherever it is: the
// table may have been renamed, or the route moved to another table.
func dropTriggers(ctx context.Context, tx pgx.Tx, name string) error {
	rows, err := tx.Query(ctx, routeFunctionTriggersSQL, functionName(name)+"()")
	if err != nil {
		return fmt.Errorf("finding the triggers of route %q: %w", name, err)
	}
	drops, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("finding the triggers of route %q: %w", name, err)
	}
	for _, d := range drops {
		if _, err := tx.Exec(ctx, d); err != nil {
			return fmt.Errorf("dropping a trigger of route %q: %w", name, err)
		}
	}
	return nil
}

// Spec is a route as stored in tocsin.route.spec: the input of other parts of Tocsin
// (grouping reads group, replication capture routes with it) and the record Apply compares
// to decide whether a route changed.
type Spec struct {
	Name        string         `json:"name"`
	Schema      string         `json:"schema"`
	Table       string         `json:"table"`
	Key         []string       `json:"key"` // the primary key when applied
	On          []Op           `json:"on"`
	Recipients  SpecRecipients `json:"recipients"`
	Topic       string         `json:"topic"`
	Kind        Kind           `json:"kind"`
	Payload     Payload        `json:"payload"`
	Columns     []string       `json:"columns,omitempty"`
	WhenChanged []string       `json:"when_changed,omitempty"`
	Group       *SpecGroup     `json:"group,omitempty"`
	Capture     Capture        `json:"capture"`
	// Snapshot: a debezium route delivers Debezium's snapshot reads as inserts.
	Snapshot bool `json:"snapshot,omitempty"`
	// SearchPath is the search_path in effect when a replication or debezium route with a recipient
	// query was applied; the consumer runs the query under it, as a trigger function pins
	// its own.
	SearchPath string `json:"search_path,omitempty"`
}

// SpecRecipients is Recipients as stored.
type SpecRecipients struct {
	Column string   `json:"column,omitempty"`
	SQL    string   `json:"sql,omitempty"`
	Static []string `json:"static,omitempty"`
}

// SpecGroup is Group as stored.
type SpecGroup struct {
	Window        string   `json:"window"`         // a Go duration ("30s")
	WindowSeconds float64  `json:"window_seconds"` // the same, for SQL
	By            []string `json:"by"`
	Max           int      `json:"max"`
}

func newSpec(r *Route, pk []string) Spec {
	s := Spec{
		Name: r.Name, Schema: r.Table.Schema, Table: r.Table.Name, Key: pk, On: r.On,
		Recipients: SpecRecipients{Column: r.Recipients.Column, SQL: r.Recipients.SQL, Static: r.Recipients.Static},
		Topic:      r.Topic, Kind: r.Kind, Payload: r.Payload,
		Columns: r.Columns, WhenChanged: r.WhenChanged, Capture: r.Capture, Snapshot: r.Snapshot,
	}
	if g := r.Group; g != nil {
		s.Group = &SpecGroup{Window: g.Window.String(), WindowSeconds: g.Window.Seconds(), By: g.By, Max: g.Max}
		if s.Group.By == nil {
			s.Group.By = []string{}
		}
	}
	return s
}
