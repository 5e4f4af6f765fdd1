-- The CLI's own SQL: everything else it does goes through the packages (settings.Set,
-- routes, migrate). tocsin dev creates its database by name in Go.

-- name: database_exists
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1);
