-- Retention (tocsin.feed, tocsin.inbox, tocsin.feed_horizon, tocsin.idempotency_key).

-- name: feed_prune
-- Deletes up to $4 entries older than their kind's retention as of $1 ($2 for kind change,
-- $3 for the others), with their inbox rows, and records per recipient the highest position
-- removed (the horizon only grows). Returns how many entries went.
WITH doomed AS (
    SELECT position FROM tocsin.feed
    WHERE sequenced_at < $1::timestamptz - least($2::interval, $3::interval)
      AND sequenced_at < $1::timestamptz - CASE WHEN kind = 'change' THEN $2::interval ELSE $3::interval END
    ORDER BY position
    LIMIT $4
), deleted AS (
    DELETE FROM tocsin.feed f USING doomed d WHERE f.position = d.position
    RETURNING f.recipient, f.position
), inbox AS (
    DELETE FROM tocsin.inbox i USING deleted d WHERE i.position = d.position
), horizon AS (
    INSERT INTO tocsin.feed_horizon AS h (recipient, pruned_through)
    SELECT recipient, max(position) FROM deleted GROUP BY recipient
    ON CONFLICT (recipient) DO UPDATE
    SET pruned_through = greatest(h.pruned_through, excluded.pruned_through)
)
SELECT count(*) FROM deleted;

-- name: idempotency_key_prune
DELETE FROM tocsin.idempotency_key WHERE created_at < $1::timestamptz - $2::interval;
