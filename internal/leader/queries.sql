-- Leader election.

-- name: leader_try_lock
-- Takes the role's session advisory lock $1 if nobody holds it; true when taken. The lock
-- lasts as long as the session. The session is named $2 (application_name), so that
-- pg_stat_activity and per-backend CPU show which connection is the role's.
SELECT pg_try_advisory_lock($1), set_config('application_name', $2, false);
