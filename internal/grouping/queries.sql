-- Grouping's SQL (tocsin.group_window, tocsin.group_pending: migrations/0005_inbox.sql;
-- River's tocsin.river_job). The sequencer opens and extends windows (tocsin.sequence_batch).

-- name: group_window_lock
-- Locks window ($1 recipient, $2 route, $3 group key): the flush job's serialisation point
-- with the sequencer, taken before it completes its River job.
SELECT 1 FROM tocsin.group_window WHERE recipient = $1 AND route = $2 AND group_key = $3 FOR UPDATE;

-- name: group_pending_take
-- Takes the window's pending changes (a statement after the job's completion: its snapshot
-- holds every change that joined the job).
DELETE FROM tocsin.group_pending WHERE recipient = $1 AND route = $2 AND group_key = $3
RETURNING id, topic, table_name, key, data, created_at;

-- name: group_window_close
DELETE FROM tocsin.group_window WHERE recipient = $1 AND route = $2 AND group_key = $3;

-- name: group_window_overdue
-- Windows past their end by more than $1 and pending changes without a window: the sweep
-- enqueues a flush job for each (uniqueness makes that idempotent).
SELECT recipient, route, group_key FROM tocsin.group_window
WHERE closes_at < now() - $1::interval
UNION
SELECT DISTINCT p.recipient, p.route, p.group_key FROM tocsin.group_pending p
WHERE p.sequenced_at < now() - $1::interval
  AND NOT EXISTS (SELECT 1 FROM tocsin.group_window w
                  WHERE (w.recipient, w.route, w.group_key) = (p.recipient, p.route, p.group_key))
ORDER BY 1, 2, 3
LIMIT 10000;

-- name: river_job_due_flushes
-- Due flush jobs still scheduled in queue $1 (River's fetch index: state, queue,
-- scheduled_at); the mover makes them available through River's own API.
SELECT id FROM tocsin.river_job
WHERE state = 'scheduled' AND queue = $1 AND scheduled_at <= now()
ORDER BY scheduled_at LIMIT 1000
FOR UPDATE SKIP LOCKED;

-- name: river_job_next_flush
-- When the earliest flush job still scheduled in queue $1 falls due (NULL when none).
SELECT min(scheduled_at) FROM tocsin.river_job WHERE state = 'scheduled' AND queue = $1;

-- name: river_insert_notify
-- River's "new available jobs" notification ($1 the channel, $2 the payload naming the
-- queue), as River's own inserts send it.
SELECT pg_notify($1, $2);
