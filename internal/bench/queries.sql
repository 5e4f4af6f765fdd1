-- The bench harness's own SQL (beyond what it sets up from capture_schema.sql). Scratch
-- databases and bench tables are created, truncated and dropped by name in Go.

-- name: bench_publish_soak
SELECT tocsin.publish($1, 'soak', jsonb_build_object('n', $2::bigint));

-- name: backend_pid
SELECT pg_backend_pid();

-- name: bench_publish_batch
-- One transaction's events: event $2[i] to recipient $1[i], data {"n": $2[i]}.
SELECT tocsin.publish(r, 'bench', jsonb_build_object('n', n))
FROM unnest($1::text[], $2::bigint[]) AS t(r, n);

-- name: bench_publish_fanout
-- One event to many recipients in one call.
SELECT tocsin.publish($1::text[], 'bench', jsonb_build_object('n', $2::bigint));

-- name: backend_names
-- Every session of the server and what it is: its application_name (tocsin-sequencer,
-- tocsin-doorbell, tocsin for the node's pool, tocsin-bench for the bench's own) or, without
-- one, its backend type (walwriter, checkpointer, …).
SELECT pid, coalesce(nullif(application_name, ''), backend_type, 'unknown') FROM pg_stat_activity;

-- name: replication_slot_pid
-- The walsender streaming from slot $1.
SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1;

-- name: sequencer_leading
-- Whether a sequencer holds its leader lock (internal/sequencer's key, split as pg_locks
-- shows it) in this database.
SELECT EXISTS (
  SELECT 1 FROM pg_locks
  WHERE locktype = 'advisory' AND granted AND classid = x'746f6373'::bigint::oid AND objid = x'696e2d73'::bigint::oid
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database()));
