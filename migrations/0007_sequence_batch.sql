-- The sequencer's batch: the named steps of tocsin.sequence_batch (the function itself is
-- in 0020). This file is the steps' one definition. (0002 and 0005 created earlier versions; those definitions were removed from
-- those files, and a database migrated before drops them here.)
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

-- Step 1: deletes and returns up to batch_limit committed outbox rows, in id order.
CREATE FUNCTION tocsin.sequence_take(batch_limit integer) RETURNS tocsin.outbox[]
LANGUAGE sql AS $$
    WITH taken AS (
        DELETE FROM tocsin.outbox o
        WHERE o.id IN (SELECT id FROM tocsin.outbox ORDER BY id LIMIT batch_limit)
        RETURNING o
    )
    SELECT array_agg(t.o ORDER BY (t.o).id) FROM taken t
$$;

-- Step 2: moves the grouped rows of batch into tocsin.group_pending and opens or extends
-- their windows (a route's own window and max; message_window and message_max for
-- published messages). Returns the touched windows as a JSON array of
-- {recipient, route, group_key, closes_at, count, max_count}, NULL when none.
CREATE FUNCTION tocsin.sequence_divert_grouped(batch tocsin.outbox[], message_window interval,
                                               message_max integer) RETURNS jsonb
LANGUAGE sql AS $$
    WITH grouped AS (
        SELECT b.* FROM unnest(batch) b WHERE tocsin.outbox_is_grouped(b.kind, b.group_key)
    ), pending AS (
        INSERT INTO tocsin.group_pending (recipient, route, group_key, topic, table_name, key, data, created_at)
        SELECT recipient, coalesce(route, ''), group_key, topic, table_name, key, data, created_at
        FROM grouped ORDER BY id
    ), windows AS (
        -- Windows in key order: the flush job locks them the same way, so never a deadlock.
        INSERT INTO tocsin.group_window AS w (recipient, route, group_key, closes_at, max_count, count)
        SELECT g.recipient, coalesce(g.route, ''), g.group_key,
               now() + coalesce(make_interval(secs => (min(r.spec->'group'->>'window_seconds'))::float8), message_window),
               coalesce(min((r.spec->'group'->>'max')::integer), message_max),
               count(*)
        FROM grouped g LEFT JOIN tocsin.route r ON r.name = g.route
        GROUP BY g.recipient, coalesce(g.route, ''), g.group_key
        ORDER BY 1, 2, 3
        ON CONFLICT (recipient, route, group_key) DO UPDATE SET count = w.count + excluded.count
        RETURNING w.recipient, w.route, w.group_key, w.closes_at, w.count, w.max_count
    )
    SELECT jsonb_agg(to_jsonb(w)) FROM windows w
$$;

-- Step 3: the batch's other rows as feed entries numbered after position `after`, in id
-- order. Entries of kind notification, digest and message belong in the inbox.
CREATE FUNCTION tocsin.sequence_number(batch tocsin.outbox[], after bigint) RETURNS tocsin.batch_entry[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(ROW(
               n.position, n.recipient, n.route, n.topic, n.kind, n.op, n.table_name, n.key, n.data,
               n.old, n.changed, n.group_key, n.created_at,
               NULL, n.inboxed, n.inboxed::integer, n.inboxed::integer
           )::tocsin.batch_entry ORDER BY n.position), '{}')
    FROM (SELECT after + row_number() OVER (ORDER BY b.id) AS position, b.*,
                 b.kind IN ('notification', 'digest', 'message') AS inboxed
          FROM unnest(batch) b
          WHERE NOT tocsin.outbox_is_grouped(b.kind, b.group_key)) n
$$;

-- Step 4: each group's new digests supersede, in order, the group's unread digest (if
-- any) and one another: every one names the one before it in `replaces` and carries the
-- fold of the chain so far (tocsin.digest_fold); only the newest stays in the inbox, and
-- the counts drop by each superseded digest. The prior unread digest is locked against a
-- concurrent read: if that read commits first, the digest is no longer unread and stays.
-- Its inbox row is deleted by step 6.
CREATE FUNCTION tocsin.sequence_supersede_digests(entries tocsin.batch_entry[]) RETURNS tocsin.batch_entry[]
LANGUAGE sql AS $$
    WITH e AS (
        SELECT * FROM unnest(entries)
    ), digests AS (
        SELECT position, recipient, coalesce(route, '') AS route, group_key, data
        FROM e WHERE kind = 'digest' AND group_key IS NOT NULL
    ), prior AS (
        SELECT DISTINCT ON (d.recipient, d.route, d.group_key)
               o.position, d.recipient, d.route, d.group_key, f.data, o.seen_at IS NULL AS unseen
        FROM digests d
        CROSS JOIN LATERAL (
            SELECT i.position, i.seen_at FROM tocsin.inbox i
            WHERE i.recipient = d.recipient AND i.route = d.route AND i.group_key = d.group_key
              AND i.kind = 'digest' AND i.read_at IS NULL AND i.archived_at IS NULL
            ORDER BY i.position DESC LIMIT 1
            FOR UPDATE) o
        JOIN tocsin.feed f ON f.position = o.position
    ), chain AS (
        SELECT c.*,
               tocsin.digest_fold(c.data) OVER w AS merged,
               lag(c.position) OVER w AS prev_position,
               lag(c.is_prior) OVER w AS prev_is_prior,
               lag(c.unseen) OVER w AS prev_unseen,
               lead(c.position) OVER w IS NULL AS is_last
        FROM (SELECT position, recipient, route, group_key, data, false AS is_prior, true AS unseen FROM digests
              UNION ALL
              SELECT position, recipient, route, group_key, data, true, unseen FROM prior) c
        WINDOW w AS (PARTITION BY c.recipient, c.route, c.group_key ORDER BY c.position)
    ), superseding AS (
        SELECT position, prev_position, merged, is_last,
               (prev_position IS NOT NULL)::integer AS d_unread,
               (prev_position IS NOT NULL AND (NOT prev_is_prior OR prev_unseen))::integer AS d_unseen
        FROM chain WHERE NOT is_prior
    )
    SELECT array_agg(ROW(
               e.position, e.recipient, e.route, e.topic, e.kind, e.op, e.table_name, e.key,
               coalesce(s.merged, e.data), e.old, e.changed, e.group_key, e.created_at,
               s.prev_position, e.in_inbox AND coalesce(s.is_last, true),
               e.unread_delta - coalesce(s.d_unread, 0), e.unseen_delta - coalesce(s.d_unseen, 0)
           )::tocsin.batch_entry ORDER BY e.position)
    FROM e LEFT JOIN superseding s ON s.position = e.position
$$;

-- Step 5: entries of kind `inbox` (state changes) get the recipient's counts as of their
-- own position: the stored counts plus what the batch's entries before them change. Runs
-- before step 6 touches the inbox, so the stored counts are those before this batch.
CREATE FUNCTION tocsin.sequence_stamp_inbox_counts(entries tocsin.batch_entry[]) RETURNS tocsin.batch_entry[]
LANGUAGE sql STABLE AS $$
    WITH e AS (
        SELECT e.*,
               sum(e.unread_delta) OVER w AS run_unread,
               sum(e.unseen_delta) OVER w AS run_unseen
        FROM unnest(entries) e
        WINDOW w AS (PARTITION BY e.recipient ORDER BY e.position)
    )
    SELECT array_agg(ROW(
               e.position, e.recipient, e.route, e.topic, e.kind, e.op, e.table_name, e.key,
               CASE WHEN e.kind = 'inbox' THEN coalesce(e.data, '{}') || jsonb_build_object('counts', jsonb_build_object(
                        'unread', coalesce(c.unread, 0) + e.run_unread, 'unseen', coalesce(c.unseen, 0) + e.run_unseen))
                    ELSE e.data END,
               e.old, e.changed, e.group_key, e.created_at, e.replaces, e.in_inbox, e.unread_delta, e.unseen_delta
           )::tocsin.batch_entry ORDER BY e.position)
    FROM e LEFT JOIN tocsin.inbox_count c ON c.recipient = e.recipient
$$;

-- Step 6: writes the entries into the feed, removes the inbox rows of the digests they
-- supersede and adds theirs (the inbox triggers keep the counts). Returns the highest
-- position written.
CREATE FUNCTION tocsin.sequence_write(entries tocsin.batch_entry[]) RETURNS bigint
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM tocsin.inbox i
        WHERE i.position IN (SELECT e.replaces FROM unnest(entries) e WHERE e.replaces IS NOT NULL)
    ), inboxed AS (
        INSERT INTO tocsin.inbox (position, recipient, kind, route, group_key)
        SELECT e.position, e.recipient, e.kind, coalesce(e.route, ''), e.group_key
        FROM unnest(entries) e WHERE e.in_inbox
    ), inserted AS (
        INSERT INTO tocsin.feed (position, recipient, route, topic, kind, op, table_name, key, data,
                                 old, changed, group_key, created_at, replaces)
        SELECT e.position, e.recipient, e.route, e.topic, e.kind, e.op, e.table_name, e.key, e.data,
               e.old, e.changed, e.group_key, e.created_at, e.replaces
        FROM unnest(entries) e
        RETURNING position
    )
    SELECT max(position) FROM inserted
$$;

-- The batch itself, tocsin.sequence_batch, which runs these steps, is defined in
-- 0020_sequence_batch_durable.sql.
