// Package leader elects one leader per role across every Tocsin node sharing a database.
//
// Leadership is a PostgreSQL session advisory lock held on a dedicated connection taken
// out of the pool (and never handed back to it). Nothing else coordinates the nodes: when
// the leader's process dies, is killed or loses its connection, the server ends the
// session, the lock goes with it, and the next standby to try takes it. The sequencer and
// the replication consumer each elect their leader with an Elector of their own key.
//
// What an Elector guarantees, and what it does not:
//
//   - At most one session in the cluster holds a role's lock at any moment, so at most one
//     LeadFunc of a role runs with a live connection.
//   - Leadership is the connection: it lasts exactly as long as the session that holds the
//     lock. A LeadFunc does its leader-only work on the connection it is given, so that
//     losing the session makes that work fail instead of running unguarded. Work done on
//     other connections is not covered: a leader whose session just died may still
//     complete it (the sequencer therefore also locks tocsin.feed_state in every batch;
//     the replication slot admits one reader at a time).
//   - No lock outlives its LeadFunc: when it returns, the connection is closed, which
//     releases the lock at once, whatever state the session is in.
//   - Standbys take over within about one StandbyInterval of the lock's release.
//   - Failures never stop the election: an error from the database or from a LeadFunc is
//     logged and the Elector tries again after RetryInterval, until its context ends.
package leader
