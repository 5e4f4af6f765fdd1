-- Idempotent publishing (tocsin.idempotency_key: migrations/0005_inbox.sql). The message
-- itself goes through outbox.InsertTx.

-- name: idempotency_key_claim
-- Claims (sender $1, key $2) for a request hashing to $3; a concurrent first use holds the
-- row, so this waits for it to commit or roll back. No row inserted: the key was used.
INSERT INTO tocsin.idempotency_key (sender, key, request_hash, response)
VALUES ($1, $2, $3, '{}') ON CONFLICT DO NOTHING;

-- name: idempotency_key_read
SELECT request_hash, response FROM tocsin.idempotency_key WHERE sender = $1 AND key = $2;

-- name: idempotency_key_answer
-- Records the answer to replay for the key, in the publishing transaction.
UPDATE tocsin.idempotency_key SET response = $3 WHERE sender = $1 AND key = $2;
