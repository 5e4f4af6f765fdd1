-- The outbox, the feed and the sequencer's state.
--
-- Writers (route triggers, tocsin.publish, replication capture, the publish API) insert into
-- tocsin.outbox inside their own transactions. They never NOTIFY and never touch the feed.
-- The sequencer is the feed's only writer: tocsin.sequence_batch (0007) moves committed outbox
-- rows into tocsin.feed, numbering them in the order in which they became visible, and rings
-- the doorbell once per batch.

-- Runtime switches (push, capture). Read by every node and by the route triggers.
CREATE TABLE tocsin.setting (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tocsin.setting (key, value) VALUES ('capture', 'true'), ('push', 'true');

-- One row: the feed generation and the sequencer's high-water mark.
-- epoch changes whenever the feed is reset, so that older cursors are refused with 410.
CREATE TABLE tocsin.feed_state (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch      text    NOT NULL,
    position   bigint  NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tocsin.feed_state (epoch)
VALUES (substr(md5(random()::text || clock_timestamp()::text), 1, 10));

-- Per-recipient rows waiting to be sequenced. Their id is only a tie-breaker: ids are
-- taken before commit, so they do not follow commit order.
CREATE TABLE tocsin.outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient   text        NOT NULL,
    route       text,
    topic       text        NOT NULL,
    kind        text        NOT NULL,
    op          text,
    table_name  text,
    key         jsonb,
    data        jsonb,
    old         jsonb,
    changed     text[],
    group_key   text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- A busy queue table: vacuum it often so the sequencer's probe stays a one-page read.
ALTER TABLE tocsin.outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                              autovacuum_vacuum_cost_delay = 0);

-- The per-recipient feed. position is global and follows commit order.
CREATE TABLE tocsin.feed (
    position     bigint      PRIMARY KEY,
    recipient    text        NOT NULL,
    route        text,
    topic        text        NOT NULL,
    kind         text        NOT NULL,
    op           text,
    table_name   text,
    key          jsonb,
    data         jsonb,
    old          jsonb,
    changed      text[],
    group_key    text,
    created_at   timestamptz NOT NULL,
    sequenced_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feed_recipient_position_idx ON tocsin.feed (recipient, position);

-- Installed routes (tocsin routes apply). The trigger function of each is generated from spec.
CREATE TABLE tocsin.route (
    name       text PRIMARY KEY,
    table_name text  NOT NULL,
    capture    text  NOT NULL DEFAULT 'trigger',
    spec       jsonb NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- tocsin.publish, the transactional outbox for applications, is defined in
-- 0060_outbox_route_op_sequence_take_publish.sql.

-- The highest position retention removed, per recipient. A cursor below it has a gap and is
-- answered with 410 cursor-expired; a recipient that lost nothing keeps its old cursor valid.
CREATE TABLE tocsin.feed_horizon (
    recipient      text PRIMARY KEY,
    pruned_through bigint NOT NULL
);

-- Retention walks the feed by age; positions and sequenced_at grow together, so a BRIN
-- index serves it at almost no cost to the sequencer's inserts.
CREATE INDEX feed_sequenced_at_brin ON tocsin.feed USING brin (sequenced_at);

-- The sequencer's wait: probes the outbox every interval_ms inside the server, and returns
-- true as soon as a committed row is there, or false after timeout_ms. Each probe takes a
-- fresh snapshot (READ COMMITTED, volatile function), so it sees rows committed meanwhile.
-- Waiting here instead of in Tocsin costs a fraction of the CPU of a client-side poll at the
-- same interval (measured: see README "Performance"), and no round trip while idle.
CREATE FUNCTION tocsin.outbox_wait(timeout_ms integer, interval_ms integer) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_deadline timestamptz := clock_timestamp() + timeout_ms * interval '1 millisecond';
BEGIN
    LOOP
        IF EXISTS (SELECT 1 FROM tocsin.outbox ORDER BY id LIMIT 1) THEN
            RETURN true;
        END IF;
        EXIT WHEN clock_timestamp() >= v_deadline;
        PERFORM pg_sleep(interval_ms / 1000.0);
    END LOOP;
    RETURN false;
END;
$$;
