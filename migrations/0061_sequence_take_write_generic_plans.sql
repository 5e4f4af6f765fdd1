-- Cheaper sequencer batches: steps 1 and 6 of the batch (0007) keep one plan for the session,
-- and the inbox counters update in place. Replaces tocsin.sequence_take (0060) and
-- tocsin.sequence_write (0030); this file is their one definition.
--
-- Measured with pg_stat_statements (track = all, track_planning) on batches of 20 rows, the
-- size a busy feed's 2 ms probe finds: PL/pgSQL planned the take again on every batch (a
-- custom plan for the LIMIT's value always looked cheaper than the generic one), which
-- cost more than running it; step 6's one statement fired the inbox's DELETE and INSERT
-- statement triggers even when the batch removed or added no inbox row.
--
-- tocsin.inbox_count is updated by every batch that adds inbox rows, one row per recipient.
-- Full pages made most of those updates leave the page: a new index entry and an extra
-- WAL record for each. With room left on each page they stay HOT (heap-only). Existing
-- pages get that room as their rows are updated.
ALTER TABLE tocsin.inbox_count SET (fillfactor = 50);

-- Step 1: deletes and returns up to batch_limit committed outbox rows, in id order, with the
-- values of their route_op filled in (0060), so that the later steps see every row in the
-- same, complete form. The ids are taken as an array so that the plan is the same for any
-- limit (the outbox's first ids, then those rows by id, both from its primary key): the
-- function keeps that one plan (a semi-join on `id IN (…)` planned without the limit's value
-- reads the whole outbox).
CREATE OR REPLACE FUNCTION tocsin.sequence_take(batch_limit integer) RETURNS tocsin.outbox[]
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    result tocsin.outbox[];
BEGIN
    WITH taken AS (
        DELETE FROM tocsin.outbox o
        WHERE o.id = ANY (ARRAY(SELECT id FROM tocsin.outbox ORDER BY id LIMIT batch_limit))
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

-- Step 6: writes the entries into the feed, removes the inbox rows of the digests they
-- supersede and adds theirs (the inbox triggers keep the counts). Returns the highest
-- position written. Each statement runs only when it has rows to write, so a batch without
-- digests or inbox entries fires no inbox trigger.
CREATE OR REPLACE FUNCTION tocsin.sequence_write(entries tocsin.batch_entry[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_replaces bigint[];
    v_inboxed  boolean;
    result     bigint;
BEGIN
    SELECT array_agg(e.replaces) FILTER (WHERE e.replaces IS NOT NULL), bool_or(e.in_inbox), max(e.position)
    INTO v_replaces, v_inboxed, result
    FROM unnest(entries) e;
    IF v_replaces IS NOT NULL THEN
        DELETE FROM tocsin.inbox i WHERE i.position = ANY (v_replaces);
    END IF;
    IF v_inboxed THEN
        INSERT INTO tocsin.inbox (position, recipient, kind, route, group_key)
        SELECT e.position, e.recipient, e.kind, coalesce(e.route, ''), e.group_key
        FROM unnest(entries) e WHERE e.in_inbox;
    END IF;
    INSERT INTO tocsin.feed (position, recipient, route, topic, kind, op, table_name, key, data,
                             old, changed, group_key, created_at, replaces)
    SELECT e.position, e.recipient, e.route, e.topic, e.kind, e.op, e.table_name, e.key, e.data,
           e.old, e.changed, e.group_key, e.created_at, e.replaces
    FROM unnest(entries) e;
    RETURN result;
END;
$$;
