package collective

import (
	"context"
	"fmt"
	"time"
)

// Tag names one message of one collective. Every collective call on a Comm
// takes the next sequence number (all ranks call collectives in the same
// order, so the numbers agree), and Step numbers the messages a rank
// exchanges with one peer inside that call.
type Tag struct {
	Seq  uint64
	Step uint32
}

// Transport moves whole messages between the ranks of one job. It is the
// only thing Comm needs; implementations are the NATS transport (NewNATS,
// Connect) and the in-process Network used by tests.
//
// Messages are matched by (sender, Tag), never by arrival order: a message
// that arrives before its Recv is kept until asked for.
type Transport interface {
	// Rank is this endpoint's rank, in [0, Size).
	Rank() int
	// Size is the number of ranks in the job.
	Size() int
	// Send delivers data to rank to under tag. The transport does not keep
	// data after Send returns. Send does not wait for the receiver.
	Send(ctx context.Context, to int, tag Tag, data []byte) error
	// Recv returns the message that rank from sent under tag. It blocks
	// until the message is complete, the transport learns that the message
	// can never come (the sender died, left or the job aborted: a *RankError),
	// or ctx ends. The returned slice belongs to the caller.
	Recv(ctx context.Context, from int, tag Tag) ([]byte, error)
	// RecvInto is Recv into the caller's buffer: the message is copied into
	// dst as its chunks arrive, and its length returned. A message longer
	// than dst is an error. dst must not be touched until RecvInto returns.
	RecvInto(ctx context.Context, from int, tag Tag, dst []byte) (int, error)
	// Abort tells every peer, without waiting, that the job is broken
	// because of cause: their pending and future Recvs fail with it. The
	// transport stays open (Close still has to be called).
	Abort(cause error)
	// Close leaves the job. A nil cause is a normal exit: peers still waiting
	// for a message from this rank fail. A non-nil cause aborts the job:
	// every peer's pending and next collective fails with it.
	Close(cause error) error
}

// RankError reports that a collective could not complete because of one
// rank: it died or stopped answering, it left the job, or it aborted.
type RankError struct {
	Rank   int    // the rank at fault
	Reason string // e.g. "did not answer within 1m0s", "left the job"
	Op     string // the collective that failed here, e.g. "barrier"
	Seq    uint64 // that collective's sequence number
}

func (e *RankError) Error() string {
	s := fmt.Sprintf("collective: rank %d %s", e.Rank, e.Reason)
	if e.Op != "" {
		s += fmt.Sprintf(" (%s #%d)", e.Op, e.Seq)
	}
	return s
}

// silentError is the RankError for a rank that has not been heard from for
// timeout.
func silentError(rank int, timeout, silent time.Duration) *RankError {
	return &RankError{Rank: rank, Reason: fmt.Sprintf("did not answer within %v (nothing heard for %v)",
		timeout, silent.Round(time.Millisecond))}
}
