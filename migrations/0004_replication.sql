-- Capture by logical replication (routes with `capture: replication`).
--
-- One row per replication slot Tocsin created in this database (the slot is named
-- tocsin_<database>). The row is written before the slot is created and removed only when
-- the last replication route goes, so a slot that is missing or invalidated while its row
-- exists was lost: the consumer recreates it and bumps the feed epoch (never a silent gap).
--
-- applied_lsn is the commit LSN of the last source transaction whose outbox rows are
-- committed. The consumer writes it in the same transaction as those rows and skips every
-- transaction that commits at or below it, so a replay after a crash adds no duplicate.
-- reset_pending is set before a lost slot is recreated and cleared with the epoch bump,
-- so a crash between the two still ends in a bump.
CREATE TABLE tocsin.replication_state (
    slot_name     text PRIMARY KEY,
    applied_lsn   pg_lsn      NOT NULL DEFAULT '0/0',
    reset_pending boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
