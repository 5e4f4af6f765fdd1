-- The migration ledger (tocsin.schema_migration). The migrations themselves are
-- migrations/*.sql.

-- name: migrate_lock
-- Held for the whole run: any number of processes may migrate at once.
SELECT pg_advisory_lock($1);

-- name: migrate_unlock
SELECT pg_advisory_unlock($1);

-- name: schema_migration_create
CREATE TABLE IF NOT EXISTS tocsin.schema_migration (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now());

-- name: schema_migration_applied
SELECT EXISTS (SELECT 1 FROM tocsin.schema_migration WHERE version = $1);

-- name: schema_migration_record
INSERT INTO tocsin.schema_migration (version) VALUES ($1);

-- name: schema_migration_record_once
INSERT INTO tocsin.schema_migration (version) VALUES ($1) ON CONFLICT DO NOTHING;

-- name: schema_migration_count
SELECT count(*) FROM tocsin.schema_migration;

-- name: schema_migration_exists
SELECT to_regclass('tocsin.schema_migration') IS NOT NULL;
