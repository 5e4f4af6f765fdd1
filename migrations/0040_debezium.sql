-- Debezium capture (routes with `capture: debezium`): the consumer's place in each Kafka
-- partition it reads.
--
-- The consumer writes a partition's row in the same transaction as the outbox rows of the
-- records it applied, and on every (re)assignment resumes from next_offset, never from
-- Kafka's committed offsets (which it updates afterwards, for lag monitoring only). Every
-- batch locks its partitions' rows first and skips records below next_offset, so two
-- members that both believe they own a partition during a rebalance still apply each
-- record once.
--
-- last_commit_lsn, last_lsn and last_keys recognise what Debezium sends again after its
-- own restart: source.sequence ([last committed LSN, change LSN]) grows along the stream,
-- and one key always lands in the same partition, so a change event at or below the last
-- applied position of its partition was applied before. last_keys lists the message keys
-- applied at exactly that position (a primary-key change is a delete and a create at one
-- LSN).
CREATE TABLE tocsin.debezium_offset (
    topic           text        NOT NULL,
    partition       integer     NOT NULL,
    next_offset     bigint      NOT NULL,
    last_commit_lsn bigint,
    last_lsn        bigint,
    last_keys       jsonb       NOT NULL DEFAULT '[]',
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
