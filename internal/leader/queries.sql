-- Leader election.

-- name: leader_try_lock
-- Takes the role's session advisory lock $1 if nobody holds it; true when taken. The lock
-- lasts as long as the session.
SELECT pg_try_advisory_lock($1);
