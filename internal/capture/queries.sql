-- Replication capture's SQL (tocsin.replication_state: migrations/0004_replication.sql;
-- the slot and publication are created by routes.PrepareReplication). Outbox rows go
-- through outbox.InsertTx.

-- name: replication_state_applied
-- Records the commit LSN of the last source transaction whose outbox rows commit in this
-- same transaction: a replay skips every transaction at or below it.
INSERT INTO tocsin.replication_state (slot_name, applied_lsn) VALUES ($1, $2::text::pg_lsn)
ON CONFLICT (slot_name) DO UPDATE SET applied_lsn = excluded.applied_lsn, updated_at = now();

-- name: capture_commit_async
-- The consumer's transaction commits without waiting for the WAL flush: the sequencer's
-- durable batch flushes it before a client sees its rows, and the slot is confirmed only
-- past what the server reports flushed (wal_positions, wal_flush).
SET LOCAL synchronous_commit = off;

-- name: wal_positions
-- After a consumer commit: the WAL insert position (at or past the end of that commit's
-- record) and how far the WAL is flushed.
SELECT pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text;

-- name: wal_flush
SELECT pg_current_wal_flush_lsn()::text;

-- name: replication_state_read
SELECT true, reset_pending FROM tocsin.replication_state WHERE slot_name = $1;

-- name: replication_state_reset_pending
-- Written before a lost slot is recreated, cleared with the epoch change: a crash in
-- between still ends in a new epoch.
INSERT INTO tocsin.replication_state (slot_name, reset_pending) VALUES ($1, true)
ON CONFLICT (slot_name) DO UPDATE SET reset_pending = true, updated_at = now();

-- name: replication_state_reset_done
UPDATE tocsin.replication_state SET reset_pending = false, updated_at = now() WHERE slot_name = $1;

-- name: feed_epoch_set
-- A new feed generation: every client's next request gets 410 and refetches.
UPDATE tocsin.feed_state SET epoch = $1, updated_at = now();

-- name: replication_slot_health
-- Slot $1: whether it exists, its WAL status, the WAL it retains and its lag (bytes).
SELECT s.slot_name IS NOT NULL, s.wal_status,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint
FROM (SELECT 1) AS one
LEFT JOIN pg_replication_slots s ON s.slot_name = $1;

-- name: replication_stream_start
-- Where streaming from slot $1 starts: the applied and confirmed LSNs, and the capture
-- switch.
SELECT coalesce((SELECT applied_lsn::text FROM tocsin.replication_state WHERE slot_name = $1), '0/0'),
       coalesce((SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1), '0/0'),
       tocsin.capture_enabled();

-- name: route_replication_specs
SELECT spec FROM tocsin.route WHERE capture = 'replication';

-- name: route_spec
SELECT spec FROM tocsin.route WHERE name = $1;

-- name: pg_type_describe
-- How values of type $1 render as JSON: its kind, base and element types, category,
-- array delimiter and name.
SELECT typtype::text, typbasetype, typelem, typcategory::text, typdelim::text, format_type(oid, NULL)
FROM pg_type WHERE oid = $1;
