-- Metrics read at scrape time.

-- name: outbox_backlog
-- Outbox rows not yet sequenced, and the age of the oldest (seconds).
SELECT count(*)::float8, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM tocsin.outbox;
