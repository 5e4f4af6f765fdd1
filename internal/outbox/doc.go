// Package outbox writes tocsin.outbox, the one entrance to the feed.
//
// Every capture mode and every producer of feed entries — route triggers (generated SQL),
// tocsin.publish (SQL), replication capture, the publish API, inbox state changes and
// grouping digests — writes per-recipient rows into tocsin.outbox inside its own
// transaction. The sequencer is the only reader: it moves committed rows into the feed in
// commit order. Go writers use InsertTx (or QueueInsert, the same statement queued on a
// batch that the caller sends as one transaction) and nothing else; the SQL writers name
// the same columns, in the same order, as Columns (a test compares the trigger generator,
// tocsin.publish and the table itself with it).
//
// A route's rows are small: the route's name, topic, kind, operation and table, the same in
// every row, are registered once in tocsin.route_op (by `tocsin routes apply`), and a row
// names them by that id in route_op. Route triggers write the id; InsertTx (and
// QueueInsert) looks it up for the rows it is given, so replication and Debezium capture
// write the same small rows. The sequencer fills the values back in when it takes the rows
// (tocsin.sequence_take).
//
// InsertTx and QueueInsert guarantee:
//
//   - Atomic with the caller: the rows are written in the caller's transaction and become
//     visible to the sequencer when, and only if, that transaction commits. A rolled-back
//     transaction leaves nothing behind.
//   - Order: the rows of one call take ids in the order given, and the sequencer numbers
//     one transaction's rows by id, so a transaction's rows reach each recipient's feed in
//     the order they were written.
//   - One statement per call, whatever the number of rows: a writer batches by passing many
//     rows, never by looping.
//   - Nothing else: no NOTIFY, no feed write, no wake-up. A writer that wants its rows
//     sequenced at once calls the sequencer's Wake after its commit; otherwise the
//     sequencer's next probe finds them (within its PollInterval).
//   - Invalid rows (no recipient, topic or kind; key, data, old or group-by values that are
//     not JSON) are refused with an error before anything is written.
package outbox
