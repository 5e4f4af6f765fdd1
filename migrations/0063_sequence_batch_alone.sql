-- A batch that needs no transaction of the caller's. tocsin.sequence_batch runs inside the
-- sequencer's own BEGIN … COMMIT so that the flush jobs of the group windows it touches
-- are enqueued (by River, from Go) in the same transaction. Most batches touch no window,
-- and for them that transaction costs three round trips of its own (BEGIN, the batch,
-- COMMIT) on top of the outbox probe. This function is the batch as one statement: the
-- sequencer sends it in a pipeline right behind its probe, as a transaction of its own,
-- so that a batch costs one round trip.
--
-- It moves nothing and writes nothing when the outbox holds no row (the pipelined batch
-- also runs after a probe that timed out: a read-only transaction, no WAL), and it
-- refuses a batch that holds grouped rows with SQLSTATE TS001, which undoes the whole
-- batch; the sequencer then runs that batch again with tocsin.sequence_batch in a
-- transaction of its own making, as before.
CREATE FUNCTION tocsin.sequence_batch_alone(batch_limit integer, message_window interval, message_max integer,
                                            OUT head bigint, OUT moved integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_flushes jsonb;
BEGIN
    moved := 0;
    IF NOT EXISTS (SELECT 1 FROM tocsin.outbox ORDER BY id LIMIT 1) THEN
        RETURN;
    END IF;
    SELECT b.head, b.moved, b.flushes INTO head, moved, v_flushes
    FROM tocsin.sequence_batch(batch_limit, message_window, message_max) AS b;
    IF jsonb_array_length(coalesce(v_flushes, '[]')) > 0 THEN
        RAISE EXCEPTION 'tocsin: this batch holds grouped rows; sequence it with tocsin.sequence_batch in a transaction that enqueues its flush jobs'
            USING ERRCODE = 'TS001';
    END IF;
END;
$$;
