// Package grouping folds the changes of grouped routes (and grouped published messages)
// into digests, with River holding the timing.
//
// The sequencer diverts each grouped outbox row into tocsin.group_pending and opens or
// extends its window (tocsin.group_window, one row per recipient, route and group key); in
// the same transaction it enqueues one unique flush job per window (Enqueuer). The job is
// scheduled for the window's end, or made available at once when the window holds max
// changes. FlushWorker folds the pending rows into one outbox row of kind `digest`, which
// the sequencer then moves into the feed: the sequencer stays the feed's only writer.
//
// Invariants:
//   - At most one live flush job per window. Uniqueness is by args over the states
//     available, pending, running, scheduled and retryable; `completed` is left out, so a
//     finished job never blocks the next window.
//   - No change is lost or counted twice when it arrives during a flush. The flush
//     transaction locks the window row first, then completes its own job, then takes the
//     pending rows; the sequencer upserts the window row first, then enqueues. Both take
//     the locks in the same order, so either the change commits before the flush reads
//     (and is in its digest) or it waits for the flush to commit and opens a new window
//     with a fresh job. TestNoChangeLostOrCountedTwiceDuringFlush tries to break this.
//   - A window never waits forever: Sweep re-enqueues any window overdue by SweepGrace
//     without a live job (say, one discarded after its last attempt).
//
// River's scheduler promotes scheduled jobs on a fixed 5 s tick. Mover promotes due flush
// jobs itself when they fall due (JobRetryTx on rows it holds FOR UPDATE SKIP LOCKED while
// they are still scheduled) and wakes the flush queue with River's insert notification, so
// a digest reaches the feed within about a Tick of its window's end instead of up to 5 s.
// Between due jobs it sleeps (IdleInterval at most): nothing polls on a short tick at rest.
package grouping
