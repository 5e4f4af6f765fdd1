// Package bench measures what Tocsin costs the application it watches.
//
// RunCapture (`tocsin bench capture`) measures the insert throughput of concurrent writers,
// each transaction one autocommitted INSERT, on the same table schema under several capture
// modes: no trigger, a Tocsin route with and without a running sequencer, a route with
// capture switched off, and two hand-written comparisons (a whole-row to_jsonb outbox
// trigger and a NOTIFY per row). Modes are interleaved round by round (A B C…, A B C…) so
// that drift on a shared machine spreads over all of them, and each mode reports its median.
// Compare the ratios of one run; absolute figures only describe the machine they came from.
//
// # Invariants
//
//   - The bench never touches an existing database: it creates a scratch database (on a
//     private durable cluster, or on the server named by CaptureConfig.DatabaseURL, whose
//     role must be allowed to CREATE DATABASE), migrates it, and drops it at the end. Routes
//     applied there and the capture switch flipped there reach nobody else.
//   - Every measurement starts from the same state: all bench tables, the outbox and the
//     feed truncated, then a CHECKPOINT, so neither table size nor a pending checkpoint
//     favours one mode over another.
//   - Writers commit durably: synchronous_commit is on for their sessions, and the report
//     prints the server's fsync and full_page_writes so a non-durable server is visible.
//   - The harness checks itself: each result counts the rows inserted and the capture rows
//     written for them, so a mode that silently captured nothing (or too much) shows.
package bench
