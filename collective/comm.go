package collective

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// Comm is one rank's handle on the job's collectives. Every rank must call
// the same collectives in the same order (as in MPI); a Comm runs one
// collective at a time (concurrent calls wait for each other, in an order
// the ranks would not agree on: call collectives from one goroutine).
// After a collective fails the Comm is broken: every later call returns
// the same error. Close and Abort may be called from any goroutine, also
// while a collective is running, which then fails.
type Comm struct {
	t          Transport
	rank, size int

	opMu sync.Mutex // held for the length of one collective
	seq  uint64     // number of the last collective started (under opMu)

	mu     sync.Mutex // guards broken
	broken error

	// smallReduce is the largest allreduce (bytes per rank) that is done by
	// sending every buffer to every rank; larger ones use the ring.
	smallReduce int

	closeOnce sync.Once
	closeErr  error
	onClose   []func() error // extra cleanup, run after the transport is closed

	// nats is set when the transport is NATS; BenchPubSub needs it.
	nats *natsTransport
}

// defaultSmallReduce: below this many bytes per rank an allreduce sends each
// buffer to every rank (one round); above it the ring is cheaper.
const defaultSmallReduce = 64 << 10

// NewComm builds a Comm on a connected Transport.
func NewComm(t Transport) *Comm {
	c := &Comm{t: t, rank: t.Rank(), size: t.Size(), smallReduce: defaultSmallReduce}
	if nt, ok := t.(*natsTransport); ok {
		c.nats = nt
	}
	return c
}

// Rank is this process's rank in [0, Size).
func (c *Comm) Rank() int { return c.rank }

// Size is the number of ranks in the job.
func (c *Comm) Size() int { return c.size }

// Err returns the error that broke the Comm, or nil.
func (c *Comm) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.broken
}

// Close leaves the job. If a collective failed, Close aborts the job so
// that the peers fail at once with the same cause; otherwise it is a normal
// exit. Close is idempotent.
func (c *Comm) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		cause := c.broken
		c.mu.Unlock()
		errs := []error{c.t.Close(cause)}
		for _, f := range c.onClose {
			errs = append(errs, f())
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// Abort marks the Comm broken with err (if it is not already) and closes
// it, so that every peer's pending and next collective fails. Use it when a
// rank gives up for a reason of its own.
func (c *Comm) Abort(err error) error {
	c.mu.Lock()
	if c.broken == nil {
		c.broken = &RankError{Rank: c.rank, Reason: "aborted: " + err.Error()}
	}
	c.mu.Unlock()
	return c.Close()
}

// run runs one collective: it takes the next sequence number, and if f
// fails it names the collective in the error and breaks the Comm.
func (c *Comm) run(name string, f func(seq uint64) error) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	if err := c.Err(); err != nil {
		return err
	}
	c.seq++
	seq := c.seq
	err := f(seq)
	if err == nil {
		return nil
	}
	var re *RankError
	if errors.As(err, &re) {
		e := *re
		if e.Op == "" {
			e.Op, e.Seq = name, seq
		}
		err = &e
	} else {
		err = fmt.Errorf("collective: %s #%d on rank %d: %w", name, seq, c.rank, err)
	}
	c.mu.Lock()
	if c.broken == nil {
		c.broken = err
	}
	err = c.broken
	c.mu.Unlock()
	// The peers cannot finish this collective either: tell them now rather
	// than when this rank closes or dies.
	c.t.Abort(err)
	return err
}

func (c *Comm) send(ctx context.Context, to int, seq uint64, step int, data []byte) error {
	return c.t.Send(ctx, to, Tag{Seq: seq, Step: uint32(step)}, data)
}

func (c *Comm) recv(ctx context.Context, from int, seq uint64, step int) ([]byte, error) {
	return c.t.Recv(ctx, from, Tag{Seq: seq, Step: uint32(step)})
}

// recvExact receives a message that must fill dst exactly.
func (c *Comm) recvExact(ctx context.Context, from int, seq uint64, step int, dst []byte) error {
	n, err := c.t.RecvInto(ctx, from, Tag{Seq: seq, Step: uint32(step)}, dst)
	if err == nil && n != len(dst) {
		err = fmt.Errorf("rank %d sent %d bytes, want %d", from, n, len(dst))
	}
	return err
}

// peer returns the rank d places after this one in the ring.
func (c *Comm) peer(d int) int { return ((c.rank+d)%c.size + c.size) % c.size }

func (c *Comm) checkRoot(root int) error {
	if root < 0 || root >= c.size {
		return fmt.Errorf("root %d out of range [0, %d)", root, c.size)
	}
	return nil
}

// Barrier returns once every rank has entered it (dissemination barrier:
// ceil(log2 Size) rounds).
func (c *Comm) Barrier(ctx context.Context) error {
	return c.run("barrier", func(seq uint64) error {
		for round, d := 0, 1; d < c.size; round, d = round+1, d*2 {
			if err := c.send(ctx, c.peer(d), seq, round, nil); err != nil {
				return err
			}
			if _, err := c.recv(ctx, c.peer(-d), seq, round); err != nil {
				return err
			}
		}
		return nil
	})
}

// Bcast sends root's data to every rank. On root it returns data itself;
// elsewhere the received bytes (data is ignored there).
func (c *Comm) Bcast(ctx context.Context, root int, data []byte) ([]byte, error) {
	var out []byte
	err := c.run("bcast", func(seq uint64) error {
		if err := c.checkRoot(root); err != nil {
			return err
		}
		if c.rank != root {
			var err error
			out, err = c.recv(ctx, root, seq, 0)
			return err
		}
		for d := 1; d < c.size; d++ {
			if err := c.send(ctx, c.peer(d), seq, 0, data); err != nil {
				return err
			}
		}
		out = data
		return nil
	})
	return out, err
}

// Scatterv sends parts[i] from root to rank i, and returns this rank's part
// (on root, parts[root] itself). parts is only read on root, where it must
// have Size entries; they may differ in length.
func (c *Comm) Scatterv(ctx context.Context, root int, parts [][]byte) ([]byte, error) {
	var out []byte
	err := c.run("scatterv", func(seq uint64) error {
		var err error
		out, err = c.scatter(ctx, seq, root, parts)
		return err
	})
	return out, err
}

func (c *Comm) scatter(ctx context.Context, seq uint64, root int, parts [][]byte) ([]byte, error) {
	if err := c.checkRoot(root); err != nil {
		return nil, err
	}
	if c.rank != root {
		return c.recv(ctx, root, seq, 0)
	}
	if len(parts) != c.size {
		return nil, fmt.Errorf("root has %d parts for %d ranks", len(parts), c.size)
	}
	for d := 1; d < c.size; d++ {
		to := c.peer(d)
		if err := c.send(ctx, to, seq, 0, parts[to]); err != nil {
			return nil, err
		}
	}
	return parts[root], nil
}

// Scatter splits root's send buffer into Size equal blocks and copies block
// i into rank i's recv. On root len(send) must be Size*len(recv); send is
// ignored elsewhere.
func (c *Comm) Scatter(ctx context.Context, root int, send, recv []byte) error {
	return c.run("scatter", func(seq uint64) error {
		if err := c.checkRoot(root); err != nil {
			return err
		}
		if c.rank != root {
			return c.recvExact(ctx, root, seq, 0, recv)
		}
		if len(send) != c.size*len(recv) {
			return fmt.Errorf("send has %d bytes, want %d ranks * %d", len(send), c.size, len(recv))
		}
		parts := splitEqual(send, c.size)
		for d := 1; d < c.size; d++ {
			to := c.peer(d)
			if err := c.send(ctx, to, seq, 0, parts[to]); err != nil {
				return err
			}
		}
		copy(recv, parts[root])
		return nil
	})
}

// Gatherv collects every rank's data on root: on root it returns Size
// buffers, out[i] from rank i (out[root] is a copy of data); elsewhere nil.
// The buffers may differ in length.
func (c *Comm) Gatherv(ctx context.Context, root int, data []byte) ([][]byte, error) {
	var out [][]byte
	err := c.run("gatherv", func(seq uint64) error {
		var err error
		out, err = c.gather(ctx, seq, root, data)
		return err
	})
	return out, err
}

func (c *Comm) gather(ctx context.Context, seq uint64, root int, data []byte) ([][]byte, error) {
	if err := c.checkRoot(root); err != nil {
		return nil, err
	}
	if c.rank != root {
		return nil, c.send(ctx, root, seq, 0, data)
	}
	out := make([][]byte, c.size)
	out[root] = append([]byte{}, data...)
	for d := 1; d < c.size; d++ {
		from := c.peer(-d)
		b, err := c.recv(ctx, from, seq, 0)
		if err != nil {
			return nil, err
		}
		out[from] = b
	}
	return out, nil
}

// Gather concatenates every rank's send (all the same length) into root's
// recv, rank order; len(recv) must be Size*len(send) on root and recv is
// ignored elsewhere.
func (c *Comm) Gather(ctx context.Context, root int, send, recv []byte) error {
	return c.run("gather", func(seq uint64) error {
		if err := c.checkRoot(root); err != nil {
			return err
		}
		if c.rank != root {
			return c.send(ctx, root, seq, 0, send)
		}
		if len(recv) != c.size*len(send) {
			return fmt.Errorf("recv has %d bytes, want %d ranks * %d", len(recv), c.size, len(send))
		}
		blocks := splitEqual(recv, c.size)
		copy(blocks[root], send)
		for d := 1; d < c.size; d++ {
			from := c.peer(-d)
			if err := c.recvExact(ctx, from, seq, 0, blocks[from]); err != nil {
				return err
			}
		}
		return nil
	})
}

// Allgatherv gives every rank every rank's data: out[i] is rank i's
// (out[Rank()] is a copy of data). The buffers may differ in length.
func (c *Comm) Allgatherv(ctx context.Context, data []byte) ([][]byte, error) {
	var out [][]byte
	err := c.run("allgatherv", func(seq uint64) error {
		var err error
		out, err = c.allgather(ctx, seq, 0, data)
		return err
	})
	return out, err
}

// allgather sends data to every other rank (nearest first, so that ranks
// do not all send to the same peer at once) and collects theirs.
func (c *Comm) allgather(ctx context.Context, seq uint64, step int, data []byte) ([][]byte, error) {
	for d := 1; d < c.size; d++ {
		if err := c.send(ctx, c.peer(d), seq, step, data); err != nil {
			return nil, err
		}
	}
	out := make([][]byte, c.size)
	out[c.rank] = append([]byte{}, data...)
	for d := 1; d < c.size; d++ {
		from := c.peer(-d)
		b, err := c.recv(ctx, from, seq, step)
		if err != nil {
			return nil, err
		}
		out[from] = b
	}
	return out, nil
}

// Allgather concatenates every rank's send (all the same length) into
// every rank's recv, in rank order; len(recv) must be Size*len(send).
func (c *Comm) Allgather(ctx context.Context, send, recv []byte) error {
	return c.run("allgather", func(seq uint64) error {
		if len(recv) != c.size*len(send) {
			return fmt.Errorf("recv has %d bytes, want %d ranks * %d", len(recv), c.size, len(send))
		}
		for d := 1; d < c.size; d++ {
			if err := c.send(ctx, c.peer(d), seq, 0, send); err != nil {
				return err
			}
		}
		blocks := splitEqual(recv, c.size)
		copy(blocks[c.rank], send)
		for d := 1; d < c.size; d++ {
			from := c.peer(-d)
			if err := c.recvExact(ctx, from, seq, 0, blocks[from]); err != nil {
				return err
			}
		}
		return nil
	})
}

// Alltoallv sends parts[j] to rank j and returns out[i], what rank i sent
// to this one. len(parts) must be Size; out[Rank()] is a copy of
// parts[Rank()].
func (c *Comm) Alltoallv(ctx context.Context, parts [][]byte) ([][]byte, error) {
	var out [][]byte
	err := c.run("alltoallv", func(seq uint64) error {
		var err error
		out, err = c.alltoall(ctx, seq, parts)
		return err
	})
	return out, err
}

func (c *Comm) alltoall(ctx context.Context, seq uint64, parts [][]byte) ([][]byte, error) {
	if len(parts) != c.size {
		return nil, fmt.Errorf("%d parts for %d ranks", len(parts), c.size)
	}
	for d := 1; d < c.size; d++ {
		to := c.peer(d)
		if err := c.send(ctx, to, seq, 0, parts[to]); err != nil {
			return nil, err
		}
	}
	out := make([][]byte, c.size)
	out[c.rank] = append([]byte{}, parts[c.rank]...)
	for d := 1; d < c.size; d++ {
		from := c.peer(-d)
		b, err := c.recv(ctx, from, seq, 0)
		if err != nil {
			return nil, err
		}
		out[from] = b
	}
	return out, nil
}

// Alltoall exchanges counts: counts[j] goes to rank j, and the result's
// entry i is what rank i sent to this rank. Typical use: every rank tells
// every other how many items it is about to write for it.
func (c *Comm) Alltoall(ctx context.Context, counts []int64) ([]int64, error) {
	var out []int64
	err := c.run("alltoall", func(seq uint64) error {
		parts := make([][]byte, len(counts))
		for j, n := range counts {
			parts[j] = binary.LittleEndian.AppendUint64(nil, uint64(n))
		}
		got, err := c.alltoall(ctx, seq, parts)
		if err != nil {
			return err
		}
		out = make([]int64, c.size)
		for i, b := range got {
			if len(b) != 8 {
				return fmt.Errorf("rank %d sent %d bytes, want 8", i, len(b))
			}
			out[i] = int64(binary.LittleEndian.Uint64(b))
		}
		return nil
	})
	return out, err
}

// splitEqual cuts b into n equal blocks (len(b) is a multiple of n).
func splitEqual(b []byte, n int) [][]byte {
	k := len(b) / n
	parts := make([][]byte, n)
	for i := range parts {
		parts[i] = b[i*k : (i+1)*k : (i+1)*k]
	}
	return parts
}
