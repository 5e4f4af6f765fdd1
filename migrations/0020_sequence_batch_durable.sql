-- Replaced tocsin.sequence_batch (first defined in 0007, whose steps it runs) with a batch
-- that commits durably (its current definition is in 0062), and adds
-- tocsin.feed_check_history, which the sequencer runs each time it takes leadership.
--
-- A position, once handed to a client, must never be handed out again for another entry.
-- With synchronous_commit off (a session or server default), a crash of PostgreSQL forgets
-- the last commits; had they been batches, the doorbell would already have announced their
-- positions, and the next batches would reuse them: a client would hold events that no
-- longer exist and miss the ones now at those positions. So:
--
--   * the batch commits synchronously whatever the default (SET LOCAL below);
--   * feed_state records the database system and the WAL timeline the feed was written
--     on. When the sequencer takes leadership and finds another system or timeline (a
--     standby was promoted, a backup was restored: the history may have diverged), or a
--     head below the one it saw itself, it changes the epoch: every client gets 410 and
--     refetches, never a phantom event nor a silent gap.

ALTER TABLE tocsin.feed_state
    ADD COLUMN system_identifier bigint,  -- pg_control_system(); NULL until first recorded
    ADD COLUMN timeline          integer; -- WAL timeline of the current insert position

-- The batch, tocsin.sequence_batch, is defined in 0062_sequence_batch_skips_idle_steps.sql
-- (this file held the version that ran every step for every batch).

-- Checks that the feed's history is the one its clients followed, and changes the epoch
-- when it may have diverged. seen_head is the highest head the caller saw committed (0 when
-- it saw none). reset_reason is NULL when nothing changed; epoch is the (new) epoch.
CREATE FUNCTION tocsin.feed_check_history(seen_head bigint, OUT epoch text, OUT reset_reason text)
LANGUAGE plpgsql AS $$
DECLARE
    st         tocsin.feed_state;
    v_system   bigint;
    v_timeline integer;
BEGIN
    SET LOCAL synchronous_commit = on;
    SELECT * INTO st FROM tocsin.feed_state FOR UPDATE;
    BEGIN
        SELECT s.system_identifier INTO v_system FROM pg_control_system() s;
    EXCEPTION WHEN insufficient_privilege THEN
        v_system := NULL; -- a role without the right: the timeline still tells promotions
    END;
    -- The timeline is the first 8 hex digits of the current WAL file's name.
    v_timeline := ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::integer;

    reset_reason := CASE
        WHEN st.position < seen_head THEN
            format('the feed head went back from %s to %s (commits were lost)', seen_head, st.position)
        WHEN st.system_identifier IS NOT NULL AND v_system IS NOT NULL AND st.system_identifier <> v_system THEN
            format('the database system changed from %s to %s (restored or copied)', st.system_identifier, v_system)
        WHEN st.timeline IS NOT NULL AND st.timeline <> v_timeline THEN
            format('the WAL timeline changed from %s to %s (a standby was promoted or a backup restored)',
                   st.timeline, v_timeline)
    END;
    epoch := st.epoch;
    IF reset_reason IS NOT NULL THEN
        epoch := substr(md5(random()::text || clock_timestamp()::text), 1, 10);
    END IF;
    UPDATE tocsin.feed_state f
    SET epoch = feed_check_history.epoch,
        system_identifier = coalesce(v_system, f.system_identifier),
        timeline = v_timeline,
        updated_at = now()
    WHERE f.epoch IS DISTINCT FROM feed_check_history.epoch
       OR f.system_identifier IS DISTINCT FROM coalesce(v_system, f.system_identifier)
       OR f.timeline IS DISTINCT FROM v_timeline;
END;
$$;
