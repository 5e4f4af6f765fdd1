-- Stream tickets (tocsin.stream_ticket, migrations/0003_stream.sql).

-- name: ticket_issue
-- Stores a new ticket's hash, valid for the TTL but never beyond its token, and sweeps the
-- expired tickets in the same statement.
WITH swept AS (
    DELETE FROM tocsin.stream_ticket WHERE expires_at < now()
)
INSERT INTO tocsin.stream_ticket (ticket_hash, recipient, token_expires_at, expires_at)
VALUES ($1, $2, $3, least(now() + $4::interval, $3))
RETURNING expires_at;

-- name: ticket_redeem
-- Consumes a ticket: DELETE … RETURNING, so that of concurrent redemptions on any nodes
-- exactly one gets the row. An expired ticket is consumed too, and reported as not valid.
DELETE FROM tocsin.stream_ticket WHERE ticket_hash = $1
RETURNING recipient, token_expires_at, expires_at > now() AND token_expires_at > now();
