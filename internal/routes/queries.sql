-- The routes package's SQL that does not depend on a routes file: the route table, catalog
-- look-ups, the replication slot and the apply lock. What is generated from a routes file
-- (trigger functions, triggers, REPLICA IDENTITY, the publication's table list) is built in
-- Go (trigger.go, replication.go) from quoted identifiers and literals.

-- name: route_apply_lock
SELECT pg_advisory_xact_lock($1);

-- name: search_path
SELECT current_setting('search_path');

-- name: route_names
SELECT name FROM tocsin.route;

-- name: route_unchanged
SELECT r.spec = $2::jsonb
   AND CASE WHEN $3 = '' THEN to_regprocedure($4) IS NULL ELSE
       coalesce((SELECT p.prosrc = $3 FROM pg_proc p WHERE p.oid = to_regprocedure($4)), false)
   AND EXISTS (SELECT 1 FROM pg_trigger t
               WHERE t.tgfoid = to_regprocedure($4) AND t.tgname = $5 AND t.tgrelid = to_regclass($6)) END
FROM tocsin.route r WHERE r.name = $1;

-- name: route_upsert
INSERT INTO tocsin.route (name, table_name, capture, spec) VALUES ($1, $2, $3, $4::jsonb)
ON CONFLICT (name) DO UPDATE
SET table_name = excluded.table_name, capture = excluded.capture, spec = excluded.spec,
    applied_at = now();

-- name: route_op_register
-- Registers route $1's operations $2 (topic $3, kind $4, table $5) in tocsin.route_op and
-- returns each operation's id, the one it had when already registered. The main query does
-- not see the rows its CTE adds, so each operation comes once.
WITH wanted AS (
    SELECT $1::text AS route, op, $3::text AS topic, $4::text AS kind, $5::text AS table_name
    FROM unnest($2::text[]) AS op
), added AS (
    INSERT INTO tocsin.route_op (route, op, topic, kind, table_name)
    SELECT route, op, topic, kind, table_name FROM wanted
    ON CONFLICT (route, op, topic, kind, table_name) DO NOTHING
    RETURNING op, id
)
SELECT op, id FROM added
UNION ALL
SELECT r.op, r.id FROM tocsin.route_op r JOIN wanted w USING (route, op, topic, kind, table_name);

-- name: route_delete
DELETE FROM tocsin.route WHERE name = $1;

-- name: route_function_triggers
SELECT format('DROP TRIGGER %I ON %s', t.tgname, t.tgrelid::regclass)
FROM pg_trigger t WHERE t.tgfoid = to_regprocedure($1);

-- name: current_database
SELECT current_database();

-- name: replication_privileges
SELECT current_setting('wal_level'), current_user, rolreplication OR rolsuper
FROM pg_roles WHERE rolname = current_user;

-- name: replication_slot_and_publication
SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1),
EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $2);

-- name: publication_tables
SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1;

-- name: replication_state_record
INSERT INTO tocsin.replication_state (slot_name) VALUES ($1) ON CONFLICT DO NOTHING;

-- name: replication_slot_exists
SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1);

-- name: replication_slot_create
SELECT pg_create_logical_replication_slot($1, 'pgoutput');

-- name: replication_slot_active_pid
SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1;

-- name: backend_terminate
SELECT pg_terminate_backend($1);

-- name: replication_slot_drop
SELECT pg_drop_replication_slot($1);

-- name: route_has_replication
SELECT EXISTS (SELECT 1 FROM tocsin.route WHERE capture = 'replication');

-- name: publication_exists
SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1);

-- name: replication_state_forget
DELETE FROM tocsin.replication_state WHERE slot_name = $1;

-- name: route_apply_session_lock
SELECT pg_advisory_lock($1);

-- name: route_apply_session_unlock
SELECT pg_advisory_unlock($1);

-- name: table_describe
SELECT c.oid, c.relkind::text, c.relreplident::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2;

-- name: table_columns
SELECT a.attname, format_type(a.atttypid, a.atttypmod),
       coalesce(k.ord, 0)
FROM pg_attribute a
LEFT JOIN (
    SELECT k.attnum, k.ord
    FROM pg_index i, unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
    WHERE i.indrelid = $1 AND i.indisprimary
) k ON k.attnum = a.attnum
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY k.ord NULLS LAST, a.attnum;

-- name: search_path_set
-- Sets the search path for the rest of the transaction (recipient queries run with the
-- route's).
SELECT set_config('search_path', $1, true);
