// Package debezium is Debezium capture: routes with `capture: debezium` take their changes
// from the Kafka topics that Debezium's PostgreSQL connector writes ("<topic.prefix>.
// <schema>.<table>"), instead of a trigger or Tocsin's own replication slot. A Consumer
// reads them in a Kafka consumer group (franz-go), routes each change event in Go exactly
// as the generated triggers route rows (routes.Router), and writes the outbox.
//
// # Invariants
//
//   - Exactly once into the outbox. A batch's outbox rows and the next offset of every
//     partition it read are written in one transaction of Tocsin's database
//     (tocsin.debezium_offset). On every assignment the consumer starts from the stored
//     offsets, never from Kafka's committed ones, which it updates after the commit for
//     lag monitoring only. A kill -9 at any moment therefore loses nothing (the offset
//     moves only with the rows) and repeats nothing (the rows move only with the offset).
//   - The consumer group suffices; no leader is elected. Kafka gives each partition to one
//     member, and a batch locks its partitions' rows (SELECT … FOR UPDATE) and skips every
//     record below the stored next offset, so even two members that both believe they own
//     a partition during a rebalance apply each record once. Order is Kafka's: per
//     partition, that is per row key. Several nodes share the partitions.
//   - Debezium's own resends are not delivered twice. After its restart Debezium sends
//     again what followed its last flushed offset: the same change events at new Kafka
//     offsets. source.sequence ([last committed LSN, change LSN]) grows along Debezium's
//     stream and one key always lands in the same partition, so each partition stores its
//     last applied position and the keys applied at exactly that position; an event below
//     it, or at it with a known key, was applied before and is skipped. (A primary-key
//     change is a delete and a create at one position, with two keys: both go through.)
//     Snapshot reads are not deduplicated: a new snapshot is a deliberate re-read.
//   - Poison never stops the consumer: a record that is not JSON, not a change event, or
//     names a table no debezium route watches is skipped with an ERROR naming its topic,
//     partition and offset, and counted (tocsin_debezium_skipped_total{reason}).
//   - The capture switch holds: with capture off, records are consumed and their offsets
//     stored, and nothing is written.
//
// # Events
//
// Operations c, u and d are insert, update and delete; r (snapshot read) is an insert for
// routes with `snapshot: true` and ignored otherwise; t (truncate) and m (message) are
// ignored, like truncates in the other modes; tombstones (null values) are skipped. Both
// envelopes are accepted: with the JSON converter's schemas.enable ({"schema", "payload"})
// and without. A column holding Debezium's unavailable-value placeholder (an unchanged
// TOASTed value under REPLICA IDENTITY DEFAULT) is unknown: never delivered as a value, not
// counted as changed, taken from before when before has it.
//
// With schemas, values become the JSON the trigger mode gives: Date → "2026-11-27",
// Timestamp/MicroTimestamp/NanoTimestamp → "2026-11-27T04:02:23.512942", ZonedTimestamp →
// "2026-11-27T04:02:23.512942+00:00" (UTC), Time/MicroTime → "04:02:23.5", Decimal and
// VariableScaleDecimal → a JSON number with the column's scale (12.50), Json → embedded
// JSON, bytes → "\\x…" hex, arrays element by element. Without schemas only JSON types
// are known: numbers, booleans and strings pass as they are, so dates and timestamps stay
// Debezium's numbers, numeric follows decimal.handling.mode (a base64 string when
// "precise"), and json/jsonb stay strings.
package debezium
