-- The bench harness's own SQL (beyond what it sets up from capture_schema.sql). Scratch
-- databases and bench tables are created, truncated and dropped by name in Go.

-- name: bench_publish_latency
SELECT tocsin.publish($1, 'bench', jsonb_build_object('n', $2::bigint));

-- name: bench_publish_soak
SELECT tocsin.publish($1, 'soak', jsonb_build_object('n', $2::bigint));

-- name: backend_pid
SELECT pg_backend_pid();
