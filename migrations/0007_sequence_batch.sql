-- The sequencer's batch: the named steps of tocsin.sequence_batch (the function itself is
-- in 0062, durable since 0020; the steps' current PL/pgSQL definitions are in
-- 0030_sequence_steps_and_publish_plpgsql.sql, steps 1 and 6 in
-- 0061_sequence_take_write_generic_plans.sql). (0002 and 0005 created earlier versions;
-- those definitions were removed from those files, and a database migrated before drops
-- them here.)
--
-- One batch transaction at a time (the FOR UPDATE on feed_state serialises sequencers even
-- if two ever believed themselves leader) moves committed outbox rows into the feed:
--
--   1. take       the oldest committed outbox rows (tocsin.sequence_take)
--   2. divert     rows of grouped routes and grouped messages into tocsin.group_pending and
--                 open or extend their windows (tocsin.sequence_divert_grouped); the caller
--                 enqueues one River flush job per window listed in `flushes`, in this same
--                 transaction
--   3. number     every other row with the next feed positions, in outbox id order
--                 (tocsin.sequence_number)
--   4. supersede  an unread digest of the same group with the new one: `replaces` names it,
--                 data adds up (tocsin.digest_merge) and only the newest stays in the inbox
--                 (tocsin.sequence_supersede_digests)
--   5. stamp      entries of kind `inbox` with the recipient's counts as of their own
--                 position (tocsin.sequence_stamp_inbox_counts)
--   6. write      the feed entries and their inbox rows (tocsin.sequence_write)
--   7. ring       advance feed_state and NOTIFY the doorbell, delivered at COMMIT
--
-- Only committed rows are ever read and everything moves in the caller's transaction, so a
-- crash at any moment loses nothing and repeats nothing.

DROP FUNCTION IF EXISTS tocsin.sequence_batch(integer);
DROP FUNCTION IF EXISTS tocsin.sequence_batch(integer, interval, integer);

-- A feed entry on its way through the steps: a tocsin.feed row plus what the inbox needs.
CREATE TYPE tocsin.batch_entry AS (
    position     bigint,
    recipient    text,
    route        text,
    topic        text,
    kind         text,
    op           text,
    table_name   text,
    key          jsonb,
    data         jsonb,
    old          jsonb,
    changed      text[],
    group_key    text,
    created_at   timestamptz,
    replaces     bigint,  -- the digest this entry supersedes
    in_inbox     boolean, -- gets a tocsin.inbox row
    unread_delta integer, -- what this entry changes in the recipient's unread count
    unseen_delta integer  -- … and unseen count
);

-- Whether an outbox row waits for its group's window instead of entering the feed. Digests
-- (the fold of a window) and inbox state changes carry a group but are never grouped again.
CREATE FUNCTION tocsin.outbox_is_grouped(kind text, group_key text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT group_key IS NOT NULL AND kind NOT IN ('digest', 'inbox')
$$;

-- The batch itself, tocsin.sequence_batch, which runs these steps, is defined in
-- 0062_sequence_batch_skips_idle_steps.sql.
