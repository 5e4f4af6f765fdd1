// Package capture is replication capture: it reads the changes of the tables that
// `capture: replication` routes watch from the WAL, through a permanent logical
// replication slot (pgoutput, protocol 2, streaming off), routes them in Go exactly as the
// generated triggers route rows (routes.Router), and writes the outbox itself
// (outbox.InsertTx). Nothing is
// added to the application's write path.
//
// `tocsin routes apply` owns the publication ("tocsin": tocsin.route, tocsin.setting and
// the routed tables) and the slot ("tocsin_<database>"); see routes.PrepareReplication.
// A Consumer runs in `tocsin serve` on nodes with the capture role.
//
// # Invariants
//
//   - One consumer streams at a time: leadership (internal/leader) is a session advisory
//     lock on the connection that writes the outbox (the slot itself admits one reader too). Standbys
//     retry every StandbyInterval and take over when the leader's connection dies.
//   - No loss: the slot's confirmed position only moves past a source transaction once its
//     outbox rows are committed and that commit is on disk (standby status updates carry
//     the durable position, never what was merely received). The consumer's transaction
//     does not wait for the WAL flush — its rows are visible to the sequencer at once, and
//     the sequencer's durable batch flushes them before a client sees a position —, so the
//     WAL flush position the server reports gates each confirmation (acks). A keepalive's
//     position is confirmed only when everything received is durable and no transaction is
//     open, so a quiet database pins no WAL.
//   - No duplicate: the commit LSN of the last applied source transaction is stored in
//     tocsin.replication_state in the same transaction as its outbox rows; after a crash
//     the server resends from the confirmed position and every transaction committed at or
//     below the stored LSN is skipped.
//   - Bounded memory: transactions arrive whole and in commit order (the server spills big
//     ones); outbox rows are written every FlushRows rows inside one open transaction that
//     commits at the source transaction's end. Smaller batches go in one round trip.
//   - Never a silent gap: a slot recorded in tocsin.replication_state that is missing or
//     invalidated (max_slot_wal_keep_size) is recreated, loudly, and the feed epoch is
//     bumped so that every client gets 410 cursor-expired and refetches.
//   - Route changes and the capture switch take effect at their own commit in the stream
//     (both tables are published). With capture off, changes are consumed and confirmed
//     but write nothing.
//
// # Differences from trigger capture
//
//   - A recipient query runs when the change is decoded, against the database as it is
//     then (committed state, possibly later than the change), not inside the writing
//     transaction.
//   - Values are rendered from their text output: timestamps with time zone in UTC; types
//     to_jsonb renders specially (booleans, numbers, dates, timestamps, json, jsonb,
//     arrays of these, domains over them) match it, any other type is its text as a JSON
//     string (composite types too, where to_jsonb would build an object).
//   - "Changed" compares text output: values equal under the type's equality but written
//     differently (numeric 1.0 and 1.00) count as changed.
//   - Old values need REPLICA IDENTITY FULL, which apply sets where a route needs them.
package capture
