package collective

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Network is an in-process fabric of Size endpoints, for tests and
// single-process jobs. Messages go straight into the receiver's mailbox
// (split into chunks of MaxChunk bytes if set), heartbeats run as with
// NATS, and faults can be injected: a rank can be killed (it goes silent,
// as a crashed process would), and links can delay or reorder chunks.
type Network struct {
	size     int
	timeout  time.Duration
	maxChunk int

	mu        sync.Mutex
	eps       []*inprocEndpoint
	jitter    time.Duration // each chunk is delayed by a random [0, jitter)
	rng       *rand.Rand
	killAfter []int // >0: the rank dies after sending that many more chunks
	inflight  int   // delayed chunks not yet delivered
	drained   *sync.Cond
}

// NetworkOptions configures NewNetwork.
type NetworkOptions struct {
	// Timeout is the failure-detection timeout (see Options.Timeout);
	// 0 turns heartbeats and the liveness check off.
	Timeout time.Duration
	// MaxChunk splits messages into chunks of at most this many bytes
	// (0: never split), to exercise reassembly as NATS does.
	MaxChunk int
}

// NewNetwork makes an in-process network of size ranks.
func NewNetwork(size int, o NetworkOptions) *Network {
	n := &Network{size: size, timeout: o.Timeout, maxChunk: o.MaxChunk, killAfter: make([]int, size)}
	n.drained = sync.NewCond(&n.mu)
	for r := range size {
		ep := &inprocEndpoint{net: n, rank: r, mbox: newMailbox(r, size, o.Timeout), stop: make(chan struct{})}
		n.eps = append(n.eps, ep)
	}
	for _, ep := range n.eps {
		ep.start()
	}
	return n
}

// Transport returns rank r's endpoint.
func (n *Network) Transport(r int) Transport { return n.eps[r] }

// Comms returns a Comm on every endpoint, in rank order.
func (n *Network) Comms() []*Comm {
	cs := make([]*Comm, n.size)
	for r := range cs {
		cs[r] = NewComm(n.eps[r])
	}
	return cs
}

// Jitter delays every chunk sent from now on by a pseudo-random duration in
// [0, max), drawn from a generator seeded with seed, so chunks and messages
// overtake each other.
func (n *Network) Jitter(max time.Duration, seed uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.jitter = max
	n.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// Kill makes rank r die now, as a crashed process does: it stops
// heartbeating, whatever it sends is lost, and its own pending and future
// calls fail.
func (n *Network) Kill(r int) { n.eps[r].kill() }

// KillAfter makes rank r die right after it sends k more chunks (k >= 1),
// that is in the middle of a collective.
func (n *Network) KillAfter(r, k int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.killAfter[r] = k
}

// Close stops every endpoint's goroutines (without telling the peers) and
// waits for delayed chunks.
func (n *Network) Close() {
	for _, ep := range n.eps {
		ep.stopAll()
	}
	n.waitInflight()
}

// waitInflight waits until every delayed chunk has been delivered.
func (n *Network) waitInflight() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for n.inflight > 0 {
		n.drained.Wait()
	}
}

func (n *Network) doneInflight() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.inflight--
	if n.inflight == 0 {
		n.drained.Broadcast()
	}
}

var errKilled = errors.New("collective: this rank was killed by the test network")

type inprocEndpoint struct {
	net  *Network
	rank int
	mbox *mailbox

	mu       sync.Mutex
	dead     bool // killed or closed: sends are dropped
	stop     chan struct{}
	stopOnce sync.Once
	hbDone   chan struct{}
}

func (e *inprocEndpoint) Rank() int { return e.rank }
func (e *inprocEndpoint) Size() int { return e.net.size }

func (e *inprocEndpoint) start() {
	if e.net.timeout <= 0 {
		return
	}
	e.mbox.startWatch()
	e.hbDone = make(chan struct{})
	go func() {
		defer close(e.hbDone)
		t := time.NewTicker(heartbeatInterval(e.net.timeout))
		defer t.Stop()
		for {
			select {
			case <-e.stop:
				return
			case <-t.C:
				for _, p := range e.net.eps {
					if p != e {
						p.mbox.heard(e.rank)
					}
				}
			}
		}
	}()
}

func (e *inprocEndpoint) stopAll() {
	e.stopOnce.Do(func() { close(e.stop) })
	if e.hbDone != nil {
		<-e.hbDone
	}
	e.mbox.stopWatching()
}

func (e *inprocEndpoint) kill() {
	e.mu.Lock()
	e.dead = true
	e.mu.Unlock()
	e.stopOnce.Do(func() { close(e.stop) })
	e.mbox.fail(errKilled)
}

func (e *inprocEndpoint) isDead() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dead
}

func (e *inprocEndpoint) Send(ctx context.Context, to int, tag Tag, data []byte) error {
	if to < 0 || to >= e.net.size {
		return fmt.Errorf("collective: send to rank %d of %d", to, e.net.size)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if e.isDead() {
		return errKilled
	}
	chunk := e.net.maxChunk
	if chunk <= 0 || chunk > len(data) {
		chunk = max(len(data), 1)
	}
	nchunks := max((len(data)+chunk-1)/chunk, 1)
	for i := range nchunks {
		lo, hi := i*chunk, min((i+1)*chunk, len(data))
		part := append([]byte(nil), data[lo:hi]...)
		if !e.deliver(to, func(m *mailbox) { _ = m.deliver(e.rank, tag, lo, len(data), nchunks, part) }) {
			return errKilled
		}
	}
	return nil
}

// deliver hands f to rank to's mailbox, now or after the link's delay.
// It reports false if this rank is dead (and so nothing was sent).
func (e *inprocEndpoint) deliver(to int, f func(*mailbox)) bool {
	n := e.net
	n.mu.Lock()
	if e.isDead() {
		n.mu.Unlock()
		return false
	}
	dieNow := false
	if n.killAfter[e.rank] > 0 {
		n.killAfter[e.rank]--
		dieNow = n.killAfter[e.rank] == 0
	}
	var delay time.Duration
	if n.jitter > 0 {
		delay = time.Duration(n.rng.Int64N(int64(n.jitter)))
	}
	if delay > 0 {
		n.inflight++
	}
	n.mu.Unlock()

	m := n.eps[to].mbox
	if delay == 0 {
		f(m)
	} else {
		time.AfterFunc(delay, func() { f(m); n.doneInflight() })
	}
	if dieNow {
		e.kill()
	}
	return true
}

func (e *inprocEndpoint) Recv(ctx context.Context, from int, tag Tag) ([]byte, error) {
	return e.mbox.recv(ctx, from, tag)
}

func (e *inprocEndpoint) RecvInto(ctx context.Context, from int, tag Tag, dst []byte) (int, error) {
	return e.mbox.recvInto(ctx, from, tag, dst)
}

// Abort tells every peer that the job is broken because of cause.
func (e *inprocEndpoint) Abort(cause error) {
	if e.isDead() {
		return
	}
	e.net.waitInflight()
	culprit, reason := closeReason(e.rank, cause)
	for _, p := range e.net.eps {
		if p != e {
			p.mbox.control(e.rank, culprit, reason)
		}
	}
}

// Close tells every peer that this rank is leaving (or aborting, with
// cause), after every chunk it sent has been delivered.
func (e *inprocEndpoint) Close(cause error) error {
	if e.isDead() {
		return nil
	}
	// Control messages must not overtake data: wait for delayed chunks.
	e.net.waitInflight()
	culprit, reason := closeReason(e.rank, cause)
	for _, p := range e.net.eps {
		if p != e {
			p.mbox.control(e.rank, culprit, reason)
		}
	}
	e.mu.Lock()
	e.dead = true
	e.mu.Unlock()
	e.stopAll()
	e.mbox.fail(errClosed)
	return nil
}
