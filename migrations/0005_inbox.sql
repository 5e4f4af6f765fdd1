-- Grouping (digests), the inbox (read state and counts) and idempotent publishing.
--
-- The sequencer stays the feed's only writer. Outbox rows of grouped routes (group_key set)
-- are diverted into tocsin.group_pending in the batch transaction; a River job per
-- (recipient, route, group key) later folds them into one outbox row of kind `digest`,
-- which the sequencer then moves into the feed like any other row.

-- Feed entries name their group and the entry they supersede (a digest that evolved).
ALTER TABLE tocsin.feed ADD COLUMN replaces bigint;

-- Changes waiting for their group's window to close. Never read by clients.
CREATE TABLE tocsin.group_pending (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient    text        NOT NULL,
    route        text        NOT NULL, -- '' for published messages
    group_key    text        NOT NULL,
    topic        text        NOT NULL,
    table_name   text,
    key          jsonb,
    data         jsonb,
    created_at   timestamptz NOT NULL,
    sequenced_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX group_pending_group_idx ON tocsin.group_pending (recipient, route, group_key, id);

-- One row per open window. The row is the serialisation point between the sequencer (which
-- upserts it before enqueueing the flush job) and the flush job (which locks it before
-- completing its River job): both take the locks in the same order, so they never deadlock,
-- and a change that arrives during a flush either is read by it or opens the next window.
CREATE TABLE tocsin.group_window (
    recipient  text        NOT NULL,
    route      text        NOT NULL,
    group_key  text        NOT NULL,
    opened_at  timestamptz NOT NULL DEFAULT now(),
    closes_at  timestamptz NOT NULL,
    max_count  integer     NOT NULL,
    count      integer     NOT NULL,
    PRIMARY KEY (recipient, route, group_key)
);
CREATE INDEX group_window_closes_at_idx ON tocsin.group_window (closes_at);

-- Inbox state of the feed entries of kind notification, digest and message, keyed by feed
-- position. The sequencer inserts a row in the batch that gives the entry its position.
CREATE TABLE tocsin.inbox (
    position    bigint      PRIMARY KEY,
    recipient   text        NOT NULL,
    kind        text        NOT NULL,
    route       text        NOT NULL DEFAULT '',
    group_key   text,
    seen_at     timestamptz,
    read_at     timestamptz,
    archived_at timestamptz
);
CREATE INDEX inbox_recipient_position_idx ON tocsin.inbox (recipient, position);
-- The unread digest a new digest of the same group supersedes.
CREATE INDEX inbox_unread_digest_idx ON tocsin.inbox (recipient, route, group_key)
    WHERE kind = 'digest' AND read_at IS NULL AND archived_at IS NULL;

-- Per-recipient counters, kept exact by the statement triggers below in the transaction
-- that changes the inbox (the sequencer's batch, a state change, retention). Concurrent
-- writers serialise on the recipient's row; multi-recipient writers update in recipient
-- order, so they never deadlock each other.
CREATE TABLE tocsin.inbox_count (
    recipient text    PRIMARY KEY,
    unread    integer NOT NULL DEFAULT 0,
    unseen    integer NOT NULL DEFAULT 0
);

CREATE FUNCTION tocsin.inbox_count_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- One function for the three triggers: missing transition tables read as empty.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO tocsin.inbox_count AS c (recipient, unread, unseen)
        SELECT recipient,
               count(*) FILTER (WHERE read_at IS NULL AND archived_at IS NULL),
               count(*) FILTER (WHERE seen_at IS NULL AND archived_at IS NULL)
        FROM new_rows GROUP BY recipient ORDER BY recipient
        ON CONFLICT (recipient) DO UPDATE
        SET unread = c.unread + excluded.unread, unseen = c.unseen + excluded.unseen;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE tocsin.inbox_count c SET unread = c.unread - d.unread, unseen = c.unseen - d.unseen
        FROM (SELECT recipient,
                     count(*) FILTER (WHERE read_at IS NULL AND archived_at IS NULL) AS unread,
                     count(*) FILTER (WHERE seen_at IS NULL AND archived_at IS NULL) AS unseen
              FROM old_rows GROUP BY recipient ORDER BY recipient) d
        WHERE c.recipient = d.recipient AND (d.unread <> 0 OR d.unseen <> 0);
    ELSE
        UPDATE tocsin.inbox_count c SET unread = c.unread + d.unread, unseen = c.unseen + d.unseen
        FROM (SELECT recipient, sum(unread)::integer AS unread, sum(unseen)::integer AS unseen
              FROM (SELECT recipient,
                           (read_at IS NULL AND archived_at IS NULL)::integer AS unread,
                           (seen_at IS NULL AND archived_at IS NULL)::integer AS unseen
                    FROM new_rows
                    UNION ALL
                    SELECT recipient,
                           -(read_at IS NULL AND archived_at IS NULL)::integer,
                           -(seen_at IS NULL AND archived_at IS NULL)::integer
                    FROM old_rows) x
              GROUP BY recipient ORDER BY recipient) d
        WHERE c.recipient = d.recipient AND (d.unread <> 0 OR d.unseen <> 0);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER inbox_count_insert AFTER INSERT ON tocsin.inbox
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION tocsin.inbox_count_apply();
CREATE TRIGGER inbox_count_update AFTER UPDATE ON tocsin.inbox
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION tocsin.inbox_count_apply();
CREATE TRIGGER inbox_count_delete AFTER DELETE ON tocsin.inbox
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION tocsin.inbox_count_apply();

-- Idempotency keys of POST /v1/messages: same key and body, same answer; another body, 422.
CREATE TABLE tocsin.idempotency_key (
    sender       text        NOT NULL,
    key          text        NOT NULL,
    request_hash bytea       NOT NULL,
    response     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sender, key)
);
CREATE INDEX idempotency_key_created_at_idx ON tocsin.idempotency_key (created_at);

-- A digest that supersedes an unread one adds up: counts sum, the first change stays, the
-- newest keys come first (at most 10), data is the newest.
CREATE FUNCTION tocsin.digest_merge(old jsonb, new jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT new || jsonb_build_object(
        'count', coalesce((old->>'count')::bigint, 0) + coalesce((new->>'count')::bigint, 0),
        'first_at', coalesce(old->'first_at', new->'first_at'),
        'keys', coalesce((SELECT jsonb_agg(k ORDER BY o) FROM (
            SELECT k, min(o) AS o FROM (
                SELECT k, o FROM jsonb_array_elements(coalesce(new->'keys', '[]')) WITH ORDINALITY AS a(k, o)
                UNION ALL
                SELECT k, o + 1000 FROM jsonb_array_elements(coalesce(old->'keys', '[]')) WITH ORDINALITY AS b(k, o)
            ) u GROUP BY k ORDER BY min(o) LIMIT 10) m), '[]'::jsonb))
$$;

-- digest_merge as an aggregate: the fold of a chain of digests, oldest first.
CREATE AGGREGATE tocsin.digest_fold(jsonb) (SFUNC = tocsin.digest_merge, STYPE = jsonb);

-- The sequencer's batch, now with grouping and the inbox. One statement, so everything it
-- reads comes from one snapshot: the outbox rows it takes, the windows it extends, the
-- digests it supersedes and the counts it stamps into `inbox` events.
--
--   - Rows of grouped routes (group_key set, kind other than digest and inbox) go to
--     group_pending, and their window is opened or extended; `flushes` lists each touched
--     window (recipient, route, group_key, closes_at, count, max_count) for the caller to
--     enqueue its River flush job in this same transaction.
--   - Every other row gets the next feed position. A digest that finds an unread digest of
--     its group supersedes it: replaces names the old position, the old inbox row goes,
--     and the data adds up (tocsin.digest_merge).
--   - Entries of kind notification, digest and message get an inbox row.
--   - Entries of kind `inbox` (state changes) get the recipient's counts as of their own
--     position: the stored counts plus the changes of this batch before them.
--
-- head is the new high-water mark (NULL when the outbox was empty), moved the number of
-- outbox rows taken (feed entries plus diverted rows). The result gained a column, which
-- CREATE OR REPLACE cannot do: the function is dropped and created again, and the old
-- call tocsin.sequence_batch(n) still works (the new parameters have defaults). A caller
-- that does not enqueue the flushes leaves its windows to the grouping sweep.
DROP FUNCTION tocsin.sequence_batch(integer);
CREATE FUNCTION tocsin.sequence_batch(batch_limit integer,
                                      message_window interval DEFAULT interval '30 seconds',
                                      message_max integer DEFAULT 50,
                                      OUT head bigint, OUT moved integer, OUT flushes jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_from bigint;
    v_fed  integer;
BEGIN
    SELECT position INTO v_from FROM tocsin.feed_state FOR UPDATE;

    WITH batch AS (
        DELETE FROM tocsin.outbox o
        WHERE o.id IN (SELECT id FROM tocsin.outbox ORDER BY id LIMIT batch_limit)
        RETURNING o.*, (o.group_key IS NOT NULL AND o.kind NOT IN ('digest', 'inbox')) AS grouped
    ), pending AS (
        INSERT INTO tocsin.group_pending (recipient, route, group_key, topic, table_name, key, data, created_at)
        SELECT recipient, coalesce(route, ''), group_key, topic, table_name, key, data, created_at
        FROM batch WHERE grouped ORDER BY id
    ), windows AS (
        INSERT INTO tocsin.group_window AS w (recipient, route, group_key, closes_at, max_count, count)
        SELECT b.recipient, coalesce(b.route, ''), b.group_key,
               now() + coalesce(make_interval(secs => (min(r.spec->'group'->>'window_seconds'))::float8), message_window),
               coalesce(min((r.spec->'group'->>'max')::integer), message_max),
               count(*)
        FROM batch b LEFT JOIN tocsin.route r ON r.name = b.route
        WHERE b.grouped
        GROUP BY b.recipient, coalesce(b.route, ''), b.group_key
        ORDER BY 1, 2, 3
        ON CONFLICT (recipient, route, group_key) DO UPDATE SET count = w.count + excluded.count
        RETURNING w.recipient, w.route, w.group_key, w.closes_at, w.count, w.max_count
    ), numbered AS (
        SELECT v_from + row_number() OVER (ORDER BY b.id) AS position, b.*
        FROM batch b WHERE NOT b.grouped
    ), digests AS (
        SELECT n.position, n.recipient, coalesce(n.route, '') AS route, n.group_key, n.data
        FROM numbered n WHERE n.kind = 'digest' AND n.group_key IS NOT NULL
    ), prior AS (
        -- The unread digest each group had before this batch, locked against a concurrent
        -- read: if that read commits first, the digest is no longer unread and stays.
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
        -- Each group's digests, the prior one first: each supersedes the one before it and
        -- carries the fold of all of them; only the last stays in the inbox.
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
    ), superseded AS (
        SELECT position, prev_position AS old_position, merged AS merged_data, is_last,
               (prev_position IS NOT NULL)::integer AS d_unread,
               (prev_position IS NOT NULL AND (NOT prev_is_prior OR prev_unseen))::integer AS d_unseen
        FROM chain WHERE NOT is_prior
    ), entries AS (
        SELECT n.*, s.old_position, s.merged_data,
               n.kind IN ('notification', 'message') OR (n.kind = 'digest' AND coalesce(s.is_last, true)) AS in_inbox,
               sum((n.kind IN ('notification', 'digest', 'message'))::integer - coalesce(s.d_unread, 0)) OVER w AS run_unread,
               sum((n.kind IN ('notification', 'digest', 'message'))::integer - coalesce(s.d_unseen, 0)) OVER w AS run_unseen
        FROM numbered n LEFT JOIN superseded s ON s.position = n.position
        WINDOW w AS (PARTITION BY n.recipient ORDER BY n.position)
    ), gone AS (
        DELETE FROM tocsin.inbox i USING prior p WHERE i.position = p.position
    ), inserted AS (
        INSERT INTO tocsin.feed (position, recipient, route, topic, kind, op, table_name, key, data,
                                 old, changed, group_key, created_at, replaces)
        SELECT e.position, e.recipient, e.route, e.topic, e.kind, e.op, e.table_name, e.key,
               CASE
                   WHEN e.merged_data IS NOT NULL THEN e.merged_data
                   WHEN e.kind = 'inbox' THEN coalesce(e.data, '{}') || jsonb_build_object('counts', jsonb_build_object(
                       'unread', coalesce(c.unread, 0) + e.run_unread, 'unseen', coalesce(c.unseen, 0) + e.run_unseen))
                   ELSE e.data
               END,
               e.old, e.changed, e.group_key, e.created_at, e.old_position
        FROM entries e LEFT JOIN tocsin.inbox_count c ON c.recipient = e.recipient
        RETURNING position
    ), inboxed AS (
        INSERT INTO tocsin.inbox (position, recipient, kind, route, group_key)
        SELECT position, recipient, kind, coalesce(route, ''), group_key FROM entries WHERE in_inbox
    )
    SELECT (SELECT max(position) FROM inserted), (SELECT count(*) FROM batch),
           (SELECT jsonb_agg(to_jsonb(w)) FROM windows w)
    INTO head, v_fed, flushes;

    moved := v_fed;
    IF moved = 0 THEN
        head := NULL;
        RETURN;
    END IF;
    IF head IS NULL THEN -- every row went to a group: the feed did not move
        head := v_from;
        RETURN;
    END IF;

    UPDATE tocsin.feed_state SET position = head, updated_at = now();
    -- The doorbell: one tiny NOTIFY per batch, delivered when this transaction commits.
    PERFORM pg_notify('tocsin_doorbell', head::text);
END;
$$;
