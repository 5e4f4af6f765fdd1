// Package routes parses, checks and applies route files, and generates the trigger
// function of each route.
//
// A route names a table, the operations it fires on, who receives the change (a column of
// the row, a query, or a fixed list) and how much of the row travels. `tocsin routes check`
// calls Parse and Check; `tocsin routes apply` calls Parse and Apply. See DESIGN.md,
// "Routes", for the file format.
//
// # What a route installs
//
// Route "x" on table s.t becomes one plpgsql function tocsin."route:x"() and one AFTER ROW
// trigger "tocsin:x" on s.t for the route's operations. For each row the function writes
// one tocsin.outbox row per distinct, non-empty recipient:
//
//   - key: the primary-key columns (of OLD for deletes, NEW otherwise);
//   - changed (updates only, when the route watches columns — columns ∪ when_changed): the
//     watched columns whose value IS DISTINCT FROM the old one;
//   - data (payload full): the allow-listed columns of NEW; old (payload full): the old
//     values of the changed allow-listed columns on update, of all of them on delete;
//   - group_key (grouped routes): the jsonb array text of the group-by values;
//   - route_op: the id of the (route, operation) in tocsin.route_op, which Apply registers
//     once and which stands for the route's name, topic, kind, operation and table (the row
//     leaves those NULL; the sequencer fills them in).
//
// An update that changes none of when_changed writes nothing. An update that changes the
// recipient column reaches both the old and the new recipient. A recipient query's :name
// placeholders become references to the row's columns, bound by plpgsql; such a function
// pins the search_path in effect when it was applied.
//
// Routes with capture: replication or capture: debezium install no trigger: their changes
// are routed in Go by Router, from the WAL (internal/capture) or from Debezium's Kafka
// topics (internal/debezium), field for field as the trigger would. A debezium route's
// table usually lives in the application's database only; Check then checks the file
// alone and says so in File.Notes.
//
// # Invariants
//
//   - The application is never harmed by more than the insert itself: the generated
//     function is static SQL with no dynamic SQL, whole-row to_jsonb, NOTIFY or EXCEPTION
//     block; its first test (a catalog-cache lookup of the tocsin.capture_off marker)
//     returns at once while capture is switched off.
//     The outbox rows are part of the writer's transaction: a rollback leaves none.
//   - Check refuses what would fail at run time: missing tables, columns or primary key,
//     recipient queries that do not compile or return more than one column, watched columns
//     with no equality operator.
//   - Apply is all-or-nothing and idempotent: one transaction under an advisory lock;
//     a route whose stored spec, function body and trigger already match is not touched;
//     routes missing from the file lose their trigger, function and row.
//
// # The stored spec
//
// tocsin.route.spec holds each route as JSON (name, schema, table, key, on, recipients,
// topic, kind, payload, columns, when_changed, group {window, window_seconds, by, max},
// capture). Other parts of Tocsin read it, grouping in particular.
package routes
