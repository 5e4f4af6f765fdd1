-- Debezium capture's SQL (tocsin.debezium_offset: migrations/0040_debezium.sql). Outbox rows
-- go through outbox.InsertTx, in the same transaction as the offsets.

-- name: debezium_offset_advance
UPDATE tocsin.debezium_offset o
SET next_offset = u.next, last_commit_lsn = u.commit_lsn, last_lsn = u.lsn, last_keys = u.keys::jsonb,
    updated_at = now()
FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[])
     AS u(topic, partition, next, commit_lsn, lsn, keys)
WHERE o.topic = u.topic AND o.partition = u.partition;

-- name: route_debezium_specs
SELECT spec FROM tocsin.route WHERE capture = 'debezium';

-- name: debezium_offset_init
INSERT INTO tocsin.debezium_offset (topic, partition, next_offset)
SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[]) ON CONFLICT DO NOTHING;

-- name: debezium_offset_read
SELECT topic, partition, next_offset FROM tocsin.debezium_offset WHERE topic = ANY($1);

-- name: capture_enabled
SELECT tocsin.capture_enabled();

-- name: debezium_offset_lock
-- The stored offsets of partitions ($1 topics, $2 partitions), locked, in the given order.
SELECT o.topic, o.partition, o.next_offset, o.last_commit_lsn, o.last_lsn, o.last_keys
FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS u(topic, partition, ord)
JOIN tocsin.debezium_offset o USING (topic, partition)
ORDER BY u.ord
FOR UPDATE OF o;

-- name: debezium_offset_skip_to
-- Moves a partition past records Kafka deleted before they were read.
UPDATE tocsin.debezium_offset SET next_offset = $3 WHERE topic = $1 AND partition = $2 AND next_offset < $3;

-- name: feed_epoch_set
-- A new feed generation: every client gets 410 and refetches.
UPDATE tocsin.feed_state SET epoch = $1, updated_at = now();
