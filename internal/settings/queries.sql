-- The runtime switches' SQL. tocsin.setting is defined in migrations/0002_core.sql; a
-- trigger on it keeps the capture marker that route triggers test (0006).

-- name: setting_push
-- The push switch: on unless it says false (no row reads as on).
SELECT value <> 'false'::jsonb FROM tocsin.setting WHERE key = 'push';

-- name: setting_set
-- Turns a switch on or off; every node sees it at its next read.
INSERT INTO tocsin.setting (key, value, updated_at) VALUES ($1, to_jsonb($2::boolean), now())
ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now();
