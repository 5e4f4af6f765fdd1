-- Stream tickets: short-lived, single-use credentials that let a browser's EventSource
-- (which cannot send an Authorization header) open GET /v1/feed/stream with ?ticket=.
--
-- Only a SHA-256 hash of each ticket is stored, so a copy of this table opens nothing.
-- A ticket is consumed by DELETE ... RETURNING, so two nodes can never both accept it.
-- token_expires_at is the expiry of the bearer token the ticket was issued for: the stream
-- it opens ends then, exactly as a stream opened with the token itself would.
CREATE TABLE tocsin.stream_ticket (
    ticket_hash      bytea       PRIMARY KEY,
    recipient        text        NOT NULL,
    token_expires_at timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- Issuing a ticket also sweeps the expired ones.
CREATE INDEX stream_ticket_expires_at_idx ON tocsin.stream_ticket (expires_at);
