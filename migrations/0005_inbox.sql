-- Grouping (digests), the inbox (read state and counts) and idempotent publishing.
--
-- The sequencer stays the feed's only writer. Outbox rows of grouped routes (group_key set)
-- are diverted into tocsin.group_pending in the batch transaction (0007); a River job per
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

-- The sequencer's batch diverts grouped rows, supersedes digests and stamps inbox counts:
-- see tocsin.sequence_batch (0007).
