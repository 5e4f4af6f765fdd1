-- Reads of the feed (tocsin.feed, tocsin.feed_state, tocsin.feed_horizon). Every read is a
-- single statement, so the rows, the head and the horizon it returns come from one snapshot.
-- The entry columns are always, in this order: position, recipient, topic, kind, op,
-- table_name, key, data, old, changed, group_key, replaces, created_at (ScanEvent).

-- name: feed_state
SELECT epoch, position FROM tocsin.feed_state;

-- name: feed_list_after
-- Up to $3 of recipient $1's entries after position $2, with the feed state and the
-- recipient's retention horizon; one row with NULL entry columns when there is no entry.
SELECT s.epoch, s.position, coalesce(h.pruned_through, 0),
       f.position, f.recipient, f.topic, f.kind, f.op, f.table_name, f.key, f.data, f.old, f.changed,
       f.group_key, f.replaces, f.created_at
FROM tocsin.feed_state s
LEFT JOIN tocsin.feed_horizon h ON h.recipient = $1
LEFT JOIN LATERAL (
    SELECT * FROM tocsin.feed
    WHERE recipient = $1 AND position > $2
    ORDER BY position
    LIMIT $3
) f ON true
ORDER BY f.position;

-- name: feed_list_range
-- The entries of recipients $3 with $1 < position <= $2, at most $4: the hub's one read per
-- batch for all of its waiting clients.
SELECT f.position, f.recipient, f.topic, f.kind, f.op, f.table_name, f.key, f.data, f.old, f.changed,
       f.group_key, f.replaces, f.created_at, s.epoch
FROM tocsin.feed f CROSS JOIN tocsin.feed_state s
WHERE f.position > $1 AND f.position <= $2 AND f.recipient = ANY($3)
ORDER BY f.position
LIMIT $4;

-- name: feed_list_range_all
-- Every entry with $1 < position <= $2, at most $3: the hub's read when more clients wait
-- than a recipient filter is worth.
SELECT f.position, f.recipient, f.topic, f.kind, f.op, f.table_name, f.key, f.data, f.old, f.changed,
       f.group_key, f.replaces, f.created_at, s.epoch
FROM tocsin.feed f CROSS JOIN tocsin.feed_state s
WHERE f.position > $1 AND f.position <= $2
ORDER BY f.position
LIMIT $3;
