package feed

import "errors"

// What a reader of the feed is told. Every transport maps these the same way (short and
// long polls, streams): see httpapi's problem mapping and stream's final frames.

// ErrCursorMalformed is returned when a cursor string is not one Tocsin issued.
var ErrCursorMalformed = errors.New("cursor malformed")

// ErrCursorExpired is returned when a cursor belongs to another feed generation (the feed
// was reset or restored), points past the feed's head, or points before what retention
// removed from the recipient's feed. The client must refetch its data and restart from
// "now". See After.Check.
var ErrCursorExpired = errors.New("cursor expired")

// ErrSlowConsumer is returned to a follower of the feed (a stream) whose queue of live
// entries would have grown beyond its bound: its client does not read fast enough. The
// follower is no longer served; its client resumes from its last cursor.
var ErrSlowConsumer = errors.New("slow consumer: queue full")

// ErrClosed is returned to a follower of the feed when this node stopped serving it (the
// node is shutting down). Its client resumes from its last cursor, elsewhere.
var ErrClosed = errors.New("feed closed on this node")
