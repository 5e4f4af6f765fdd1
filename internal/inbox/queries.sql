-- The inbox's SQL (tocsin.inbox, tocsin.inbox_count: migrations/0005_inbox.sql). One list
-- statement per state and one mark statement per action, spelled out.
--
-- inbox_list_*: recipient $1's entries before position $2 in that state, newest first, at
-- most $3: the feed entry's columns (feed.ScanEvent's order), then seen_at, read_at,
-- archived_at.

-- name: inbox_list_unread
SELECT f.position, f.recipient, f.topic, f.kind, f.op, f.table_name, f.key, f.data, f.old, f.changed,
       f.group_key, f.replaces, f.created_at, i.seen_at, i.read_at, i.archived_at
FROM tocsin.inbox i JOIN tocsin.feed f ON f.position = i.position
WHERE i.recipient = $1 AND i.position < $2 AND i.read_at IS NULL AND i.archived_at IS NULL
ORDER BY i.position DESC
LIMIT $3;

-- name: inbox_list_unseen
SELECT f.position, f.recipient, f.topic, f.kind, f.op, f.table_name, f.key, f.data, f.old, f.changed,
       f.group_key, f.replaces, f.created_at, i.seen_at, i.read_at, i.archived_at
FROM tocsin.inbox i JOIN tocsin.feed f ON f.position = i.position
WHERE i.recipient = $1 AND i.position < $2 AND i.seen_at IS NULL AND i.archived_at IS NULL
ORDER BY i.position DESC
LIMIT $3;

-- name: inbox_list_all
SELECT f.position, f.recipient, f.topic, f.kind, f.op, f.table_name, f.key, f.data, f.old, f.changed,
       f.group_key, f.replaces, f.created_at, i.seen_at, i.read_at, i.archived_at
FROM tocsin.inbox i JOIN tocsin.feed f ON f.position = i.position
WHERE i.recipient = $1 AND i.position < $2 AND i.archived_at IS NULL
ORDER BY i.position DESC
LIMIT $3;

-- name: inbox_list_archived
SELECT f.position, f.recipient, f.topic, f.kind, f.op, f.table_name, f.key, f.data, f.old, f.changed,
       f.group_key, f.replaces, f.created_at, i.seen_at, i.read_at, i.archived_at
FROM tocsin.inbox i JOIN tocsin.feed f ON f.position = i.position
WHERE i.recipient = $1 AND i.position < $2 AND i.archived_at IS NOT NULL
ORDER BY i.position DESC
LIMIT $3;

-- name: inbox_counts
SELECT coalesce(max(unread), 0), coalesce(max(unseen), 0) FROM tocsin.inbox_count WHERE recipient = $1;

-- inbox_mark_*: marks recipient $1's entries at positions $2, or up to position $3, that
-- are not yet in that state; returns the positions that changed. Read and archive imply
-- seen.

-- name: inbox_mark_seen
UPDATE tocsin.inbox SET seen_at = now()
WHERE seen_at IS NULL AND recipient = $1 AND (position = ANY($2) OR position <= $3)
RETURNING position;

-- name: inbox_mark_read
UPDATE tocsin.inbox SET read_at = now(), seen_at = coalesce(seen_at, now())
WHERE read_at IS NULL AND recipient = $1 AND (position = ANY($2) OR position <= $3)
RETURNING position;

-- name: inbox_mark_archive
UPDATE tocsin.inbox SET archived_at = now(), seen_at = coalesce(seen_at, now())
WHERE archived_at IS NULL AND recipient = $1 AND (position = ANY($2) OR position <= $3)
RETURNING position;

-- name: feed_epoch
SELECT epoch FROM tocsin.feed_state;
