-- The sequencer's steps (see 0007_sequence_batch.sql for the batch they make up) and
-- tocsin.publish, in PL/pgSQL: the one definition of steps 2 to 5 (step 1 and publish's
-- array form moved to 0060, which replaced them when outbox rows began to name their route
-- by id, step 6 to 0061). They replace the SQL-language versions that 0007 and 0002 created in databases
-- migrated before, with the same statements. A SQL-language function that cannot be
-- inlined is planned again on every call; PL/pgSQL keeps each statement's plan for the
-- session. Measured: planning the steps was most of the sequencer's CPU per batch, and
-- publish planned its INSERT per call (see README "Performance").

-- Step 1, tocsin.sequence_take, is defined in 0060_outbox_route_op_sequence_take_publish.sql
-- (this file held its PL/pgSQL version before outbox rows named their route by id).

-- Step 2: moves the grouped rows of batch into tocsin.group_pending and opens or extends
-- their windows (a route's own window and max; message_window and message_max for
-- published messages). Returns the touched windows as a JSON array of
-- {recipient, route, group_key, closes_at, count, max_count}, NULL when none.
CREATE OR REPLACE FUNCTION tocsin.sequence_divert_grouped(batch tocsin.outbox[], message_window interval,
                                               message_max integer) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    result jsonb;
BEGIN
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
    SELECT jsonb_agg(to_jsonb(w)) INTO result FROM windows w;
    RETURN result;
END;
$$;

-- Step 3: the batch's other rows as feed entries numbered after position `after`, in id
-- order. Entries of kind notification, digest and message belong in the inbox.
CREATE OR REPLACE FUNCTION tocsin.sequence_number(batch tocsin.outbox[], after bigint) RETURNS tocsin.batch_entry[]
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN (
    SELECT coalesce(array_agg(ROW(
               n.position, n.recipient, n.route, n.topic, n.kind, n.op, n.table_name, n.key, n.data,
               n.old, n.changed, n.group_key, n.created_at,
               NULL, n.inboxed, n.inboxed::integer, n.inboxed::integer
           )::tocsin.batch_entry ORDER BY n.position), '{}')
    FROM (SELECT after + row_number() OVER (ORDER BY b.id) AS position, b.*,
                 b.kind IN ('notification', 'digest', 'message') AS inboxed
          FROM unnest(batch) b
          WHERE NOT tocsin.outbox_is_grouped(b.kind, b.group_key)) n
    );
END;
$$;

-- Step 4: each group's new digests supersede, in order, the group's unread digest (if
-- any) and one another: every one names the one before it in `replaces` and carries the
-- fold of the chain so far (tocsin.digest_fold); only the newest stays in the inbox, and
-- the counts drop by each superseded digest. The prior unread digest is locked against a
-- concurrent read: if that read commits first, the digest is no longer unread and stays.
-- Its inbox row is deleted by step 6.
CREATE OR REPLACE FUNCTION tocsin.sequence_supersede_digests(entries tocsin.batch_entry[]) RETURNS tocsin.batch_entry[]
LANGUAGE plpgsql AS $$
BEGIN
    RETURN (
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
    );
END;
$$;

-- Step 5: entries of kind `inbox` (state changes) get the recipient's counts as of their
-- own position: the stored counts plus what the batch's entries before them change. Runs
-- before step 6 touches the inbox, so the stored counts are those before this batch.
CREATE OR REPLACE FUNCTION tocsin.sequence_stamp_inbox_counts(entries tocsin.batch_entry[]) RETURNS tocsin.batch_entry[]
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
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
    );
END;
$$;

-- Step 6, tocsin.sequence_write, is defined in 0061_sequence_take_write_generic_plans.sql
-- (this file held its PL/pgSQL version, one statement whose plan was made again per batch).

-- tocsin.publish(recipients text[], …) is defined in
-- 0060_outbox_route_op_sequence_take_publish.sql (this file held its PL/pgSQL version before
-- the outbox gained route_op). Its one-recipient form:
CREATE OR REPLACE FUNCTION tocsin.publish(recipient text, topic text, data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tocsin.publish(ARRAY[publish.recipient], publish.topic, publish.data);
END;
$$;
