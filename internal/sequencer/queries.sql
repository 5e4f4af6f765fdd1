-- The sequencer's runtime SQL. The batch itself is tocsin.sequence_batch
-- (migrations/0062_sequence_batch_skips_idle_steps.sql) and its named steps
-- (migrations/0007_sequence_batch.sql).

-- name: sequence_batch
-- One batch, in the caller's transaction: the new head (NULL when the outbox was empty),
-- the outbox rows taken, and the group windows whose flush jobs to enqueue.
SELECT head, moved, flushes FROM tocsin.sequence_batch($1, $2, $3);

-- name: outbox_wait
-- Waits inside the server until a committed outbox row is there (true) or the timeout
-- passes (false), probing every interval.
SELECT tocsin.outbox_wait($1, $2);

-- name: feed_check_history
-- On taking leadership: the (new) epoch, and why it changed when the feed's history may
-- have diverged (NULL otherwise). $1 is the highest head this process saw committed.
SELECT epoch, reset_reason FROM tocsin.feed_check_history($1);

-- name: sequence_batch_alone
-- One batch as a transaction of its own, pipelined behind the probe: nothing when the
-- outbox is empty (moved 0, head NULL), SQLSTATE TS001 when the batch holds grouped rows
-- (it is undone, and the sequencer runs sequence_batch instead).
SELECT head, moved FROM tocsin.sequence_batch_alone($1, $2, $3);
