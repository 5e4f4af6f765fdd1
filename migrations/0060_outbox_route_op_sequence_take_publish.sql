-- A smaller outbox row: a route's constants travel as a small id, and the sequencer derives
-- them when it takes the row. Replaces tocsin.publish (first defined in 0030); this file is
-- its one definition. It replaced tocsin.sequence_take too, whose definition moved to 0061.
--
-- A route trigger's outbox row used to repeat, as text, the route's name, topic, kind, the
-- operation and the table: the same five values in every row, most of the row's bytes
-- and of its WAL, written on the application's write path. Now `tocsin routes apply`
-- registers each (route, operation) once in tocsin.route_op and the generated trigger
-- writes its id into outbox.route_op, leaving those five columns NULL. The Go writers
-- (replication and Debezium capture) do the same through outbox.InsertTx, which looks the id
-- up. Messages, digests and inbox changes have no route operation and keep writing text.
--
-- Rows written before (by triggers generated before this migration, until `tocsin routes
-- apply` runs again) carry their text and no route_op: the sequencer takes both forms.

-- One row per (route, operation) as a trigger captured it. Rows are never updated nor
-- deleted: a route that changes its topic or kind, or goes away, gets a new row the next
-- time it is applied, while outbox rows written under the old one still name theirs.
CREATE TABLE tocsin.route_op (
    id         integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    route      text        NOT NULL,
    op         text        NOT NULL,
    topic      text        NOT NULL,
    kind       text        NOT NULL,
    table_name text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (route, op, topic, kind, table_name)
);

-- route_op has no foreign key: checking one would cost a lookup per captured row. A row
-- names its route_op or its topic and kind (as every row did before): the feed needs them,
-- and a row without them would stop the sequencer at its batch.
ALTER TABLE tocsin.outbox
    ADD COLUMN route_op integer,
    ALTER COLUMN topic DROP NOT NULL,
    ALTER COLUMN kind DROP NOT NULL,
    ADD CONSTRAINT outbox_route_op_or_topic_kind
        CHECK (route_op IS NOT NULL OR (topic IS NOT NULL AND kind IS NOT NULL));

-- tocsin.sequence_take, step 1 of the batch, is defined in
-- 0061_sequence_take_write_generic_plans.sql: it fills in the values of a row's route_op.

-- The transactional outbox for applications: call inside your own transaction; the message
-- becomes visible to its recipients when (and only if) that transaction commits.
-- The column list is outbox.Columns (internal/outbox), as every writer of the outbox spells it.
CREATE OR REPLACE FUNCTION tocsin.publish(recipients text[], topic text, data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tocsin.outbox (recipient, route, topic, kind, op, table_name, key, data, old, changed, group_key, route_op)
    SELECT DISTINCT r, NULL::text, publish.topic, 'message', NULL::text, NULL::text, NULL::jsonb, publish.data,
           NULL::jsonb, NULL::text[], NULL::text, NULL::integer
    FROM unnest(publish.recipients) AS r
    WHERE r IS NOT NULL AND r <> '';
END;
$$;
