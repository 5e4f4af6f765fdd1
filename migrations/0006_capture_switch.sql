-- A cheaper capture switch. Route triggers check it on every row, and a table lookup per
-- row (0002's capture_enabled) cost about a tenth of the application's insert throughput
-- (measured: see README "Performance"). tocsin.setting stays the source of truth; a trigger
-- on it keeps a marker relation, tocsin.capture_off, that exists exactly while capture is
-- off. Route triggers test it with to_regclass (in their function), a catalog-cache
-- lookup rather than a query; tocsin.capture_enabled() answers the same for everyone else.
-- Creating and dropping the marker is transactional DDL: every session sees the switch as
-- soon as it commits, and it takes no lock that an application's write would wait for.
--
-- This file is capture_enabled's one definition: 0002 created the plpgsql version (a
-- tocsin.setting lookup, since removed from that file) that a database migrated before has
-- and that CREATE OR REPLACE below replaces.
CREATE FUNCTION tocsin.setting_capture_marker() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.key = 'capture' THEN
        IF NEW.value = 'false'::jsonb THEN
            CREATE TABLE IF NOT EXISTS tocsin.capture_off ();
        ELSE
            DROP TABLE IF EXISTS tocsin.capture_off;
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER capture_marker AFTER INSERT OR UPDATE ON tocsin.setting
FOR EACH ROW EXECUTE FUNCTION tocsin.setting_capture_marker();

CREATE OR REPLACE FUNCTION tocsin.capture_enabled() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT to_regclass('tocsin.capture_off') IS NULL
$$;

-- Bring the marker in line with the current setting.
UPDATE tocsin.setting SET value = value WHERE key = 'capture';
