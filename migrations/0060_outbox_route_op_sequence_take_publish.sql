-- A smaller outbox row: a route's constants travel as a small id, and the sequencer derives
-- them when it takes the row. Replaces tocsin.sequence_take and tocsin.publish (first
-- defined in 0030); this file is their one definition.
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

-- Step 1 of the batch (0007): deletes and returns up to batch_limit committed outbox rows,
-- in id order, with the values of their route_op filled in, so that the later steps see
-- every row in the same, complete form.
CREATE OR REPLACE FUNCTION tocsin.sequence_take(batch_limit integer) RETURNS tocsin.outbox[]
LANGUAGE plpgsql AS $$
DECLARE
    result tocsin.outbox[];
BEGIN
    WITH taken AS (
        DELETE FROM tocsin.outbox o
        WHERE o.id IN (SELECT id FROM tocsin.outbox ORDER BY id LIMIT batch_limit)
        RETURNING o.*
    )
    SELECT array_agg(ROW(t.id, t.recipient, coalesce(r.route, t.route), coalesce(r.topic, t.topic),
                         coalesce(r.kind, t.kind), coalesce(r.op, t.op), coalesce(r.table_name, t.table_name),
                         t.key, t.data, t.old, t.changed, t.group_key, t.created_at, t.route_op
                     )::tocsin.outbox ORDER BY t.id)
    INTO result
    FROM taken t LEFT JOIN tocsin.route_op r ON r.id = t.route_op;
    RETURN result;
END;
$$;

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
