package collective

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// mailbox is the receiving half shared by both transports. It keeps the
// messages that have arrived for one rank, keyed by (sender, tag), puts
// chunked messages back together, and tracks whether each peer is still
// alive: when a peer has not been heard from (data or heartbeat) for the
// liveness threshold, every pending and future Recv fails naming it.
type mailbox struct {
	self, size int
	timeout    time.Duration // failure-detection timeout; 0 disables the liveness check

	mu       sync.Mutex
	slots    map[slotKey]*slot
	lastSeen []time.Time
	dead     []bool          // peers declared dead by the liveness check
	left     []error         // non-nil once a peer left: the error for Recvs from it
	leftCh   []chan struct{} // closed when left[peer] is set
	broken   error           // set once the whole job is known to be broken
	brokenCh chan struct{}   // closed when broken is set

	stopWatch chan struct{}
	watchDone chan struct{}
}

type slotKey struct {
	from int
	tag  Tag
}

// slot is one (possibly partly arrived) message. Until a receiver gives
// a buffer (recvInto), chunks are kept as they came; after that they are
// copied straight into it.
type slot struct {
	pending []chunk // chunks not yet copied anywhere
	dst     []byte  // the receiver's buffer, once given
	total   int     // bytes in the whole message
	got     int     // chunks received so far
	nchunks int     // chunks in the whole message; 0 until the first arrives
	err     error   // the message does not fit dst
	done    bool
	ready   chan struct{} // closed when done
}

type chunk struct {
	off  int
	data []byte
}

func newMailbox(self, size int, timeout time.Duration) *mailbox {
	m := &mailbox{
		self:     self,
		size:     size,
		timeout:  timeout,
		slots:    make(map[slotKey]*slot),
		lastSeen: make([]time.Time, size),
		dead:     make([]bool, size),
		left:     make([]error, size),
		leftCh:   make([]chan struct{}, size),
		brokenCh: make(chan struct{}),
	}
	now := time.Now()
	for i := range m.leftCh {
		m.leftCh[i] = make(chan struct{})
		m.lastSeen[i] = now
	}
	return m
}

// heartbeatInterval is how often a rank announces that it is alive, for a
// failure-detection timeout T: h = T/10 (at most 5s). A peer is declared
// dead after livenessThreshold = T-3h of silence, checked every h/2, so a
// death is reported at most T-2.5h after it happens (plus the delivery of
// the last heartbeat), while a live peer must miss 7 heartbeats in a row to
// be taken for dead.
func heartbeatInterval(timeout time.Duration) time.Duration {
	h := timeout / 10
	return min(max(h, time.Millisecond), 5*time.Second)
}

func livenessThreshold(timeout time.Duration) time.Duration {
	return timeout - 3*heartbeatInterval(timeout)
}

// heard records that a message or heartbeat from peer arrived just now.
func (m *mailbox) heard(peer int) {
	if peer < 0 || peer >= m.size {
		return
	}
	now := time.Now()
	m.mu.Lock()
	m.lastSeen[peer] = now
	m.mu.Unlock()
}

// deliver stores one chunk of the message (from, tag): bytes [off,
// off+len(chunk)) of a total-byte message split into nchunks chunks. The
// mailbox keeps chunk: the caller must not reuse it.
func (m *mailbox) deliver(from int, tag Tag, off, total, nchunks int, data []byte) error {
	if from < 0 || from >= m.size || nchunks < 1 || off < 0 || off+len(data) > total {
		return fmt.Errorf("collective: malformed message from rank %d (tag %v, %d+%d of %d bytes, %d chunks)",
			from, tag, off, len(data), total, nchunks)
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastSeen[from] = now
	s := m.slotLocked(slotKey{from, tag})
	if s.done {
		return fmt.Errorf("collective: duplicate message from rank %d (tag %v)", from, tag)
	}
	if s.nchunks == 0 {
		s.nchunks, s.total = nchunks, total
		if s.dst != nil && total > len(s.dst) {
			s.err = fmt.Errorf("rank %d sent %d bytes, want at most %d", from, total, len(s.dst))
		}
	}
	if nchunks != s.nchunks || total != s.total {
		return fmt.Errorf("collective: inconsistent chunks from rank %d (tag %v)", from, tag)
	}
	switch {
	case s.err != nil:
	case s.dst != nil:
		copy(s.dst[off:], data)
	default:
		s.pending = append(s.pending, chunk{off, data})
	}
	s.got++
	if s.got == s.nchunks {
		s.done = true
		close(s.ready)
	}
	return nil
}

func (m *mailbox) slotLocked(k slotKey) *slot {
	s := m.slots[k]
	if s == nil {
		s = &slot{ready: make(chan struct{})}
		m.slots[k] = s
	}
	return s
}

// recv waits for the complete message (from, tag), removes it and returns
// it in a new buffer (or the single chunk it came in).
func (m *mailbox) recv(ctx context.Context, from int, tag Tag) ([]byte, error) {
	s, err := m.wait(ctx, from, tag, nil)
	if err != nil {
		return nil, err
	}
	if len(s.pending) == 1 && len(s.pending[0].data) == s.total {
		return s.pending[0].data, nil
	}
	buf := make([]byte, s.total)
	for _, c := range s.pending {
		copy(buf[c.off:], c.data)
	}
	return buf, nil
}

// recvInto waits for the message (from, tag), copying it into dst as it
// arrives, and returns its length. A message longer than dst is an error.
func (m *mailbox) recvInto(ctx context.Context, from int, tag Tag, dst []byte) (int, error) {
	s, err := m.wait(ctx, from, tag, dst)
	if err != nil {
		return 0, err
	}
	return s.total, s.err
}

// wait registers dst (if not nil) as the destination of (from, tag) and
// waits until the message is complete, the peer is gone or ctx ends.
func (m *mailbox) wait(ctx context.Context, from int, tag Tag, dst []byte) (*slot, error) {
	if from < 0 || from >= m.size {
		return nil, fmt.Errorf("collective: recv from rank %d of %d", from, m.size)
	}
	k := slotKey{from, tag}
	m.mu.Lock()
	s := m.slotLocked(k)
	if dst != nil {
		if s.nchunks > 0 && s.total > len(dst) {
			s.err = fmt.Errorf("rank %d sent %d bytes, want at most %d", from, s.total, len(dst))
		} else {
			for _, c := range s.pending {
				copy(dst[c.off:], c.data)
			}
		}
		s.pending, s.dst = nil, dst
	}
	leftCh := m.leftCh[from]
	m.mu.Unlock()

	select {
	case <-s.ready:
	default:
		select {
		case <-s.ready:
		case <-leftCh:
		case <-m.brokenCh:
		case <-ctx.Done():
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if s.done {
		delete(m.slots, k)
		return s, nil
	}
	s.dst = nil // the caller is giving up on its buffer
	switch {
	case m.broken != nil:
		return nil, m.broken
	case m.left[from] != nil:
		return nil, m.left[from]
	default:
		return nil, ctx.Err()
	}
}

// leave records that peer will send nothing more: Recvs from it that are
// not already satisfied fail with err.
func (m *mailbox) leave(peer int, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.left[peer] == nil {
		m.left[peer] = err
		close(m.leftCh[peer])
	}
}

// gone reports whether peer has left or has been declared dead: either
// way it will send nothing more.
func (m *mailbox) gone(peer int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.left[peer] != nil || m.dead[peer]
}

// fail breaks the whole mailbox: every pending and future recv returns err.
// The first error wins.
func (m *mailbox) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.broken == nil {
		m.broken = err
		close(m.brokenCh)
	}
}

// err is the error that broke the mailbox, or nil.
func (m *mailbox) err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.broken
}

// checkLiveness fails the mailbox if a peer that has not left has been
// silent for longer than the liveness threshold.
func (m *mailbox) checkLiveness(now time.Time) {
	if m.timeout <= 0 {
		return
	}
	limit := livenessThreshold(m.timeout)
	m.mu.Lock()
	var dead *RankError
	for peer, seen := range m.lastSeen {
		if peer == m.self || m.left[peer] != nil || m.dead[peer] {
			continue
		}
		if silent := now.Sub(seen); silent > limit {
			m.dead[peer] = true
			if dead == nil {
				dead = silentError(peer, m.timeout, silent)
			}
		}
	}
	m.mu.Unlock()
	if dead != nil {
		m.fail(dead)
	}
}

// startWatch runs checkLiveness every half heartbeat interval until
// stopWatching.
// Peers count as heard from when the watch starts.
func (m *mailbox) startWatch() {
	if m.timeout <= 0 || m.stopWatch != nil {
		return
	}
	now := time.Now()
	m.mu.Lock()
	for i := range m.lastSeen {
		if m.lastSeen[i].Before(now) {
			m.lastSeen[i] = now
		}
	}
	m.mu.Unlock()
	m.stopWatch = make(chan struct{})
	m.watchDone = make(chan struct{})
	go func() {
		defer close(m.watchDone)
		t := time.NewTicker(heartbeatInterval(m.timeout) / 2)
		defer t.Stop()
		for {
			select {
			case <-m.stopWatch:
				return
			case now := <-t.C:
				m.checkLiveness(now)
			}
		}
	}()
}

func (m *mailbox) stopWatching() {
	if m.stopWatch != nil {
		close(m.stopWatch)
		<-m.watchDone
		m.stopWatch = nil
	}
}

// errClosed fails what is pending on a rank when it closes its own Comm.
var errClosed = errors.New("collective: this rank closed its communicator")

// closeReason turns the cause passed to Transport.Close into what the
// peers are told: culprit < 0 for a normal exit, else the rank at fault and
// why.
func closeReason(self int, cause error) (culprit int, reason string) {
	if cause == nil {
		return -1, ""
	}
	var re *RankError
	if errors.As(cause, &re) {
		return re.Rank, re.Reason
	}
	return self, "aborted: " + strings.TrimPrefix(cause.Error(), "collective: ")
}

// control handles a peer's leave (culprit < 0) or abort message.
func (m *mailbox) control(from, culprit int, reason string) {
	if culprit < 0 {
		m.leave(from, &RankError{Rank: from, Reason: "left the job (closed its communicator)"})
		return
	}
	if culprit != from {
		reason += fmt.Sprintf(" (reported by rank %d)", from)
	}
	err := &RankError{Rank: culprit, Reason: reason}
	m.leave(from, err)
	m.fail(err)
}
