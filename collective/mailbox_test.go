package collective

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// Chunks are put together whatever order they arrive in, whether the
// receiver gave its buffer before, between or after them.
func TestMailboxReassembly(t *testing.T) {
	msg := []byte("0123456789abcdefghij")
	chunks := []struct{ off, end int }{{15, 20}, {0, 5}, {10, 15}, {5, 10}}
	for registerAfter := 0; registerAfter <= len(chunks); registerAfter++ {
		for _, into := range []bool{false, true} {
			m := newMailbox(0, 2, 0)
			tag := Tag{Seq: 7, Step: 1}
			deliver := func(i int) {
				c := chunks[i]
				if err := m.deliver(1, tag, c.off, len(msg), len(chunks), append([]byte{}, msg[c.off:c.end]...)); err != nil {
					t.Fatal(err)
				}
			}
			for i := range registerAfter {
				deliver(i)
			}
			got := make(chan []byte, 1)
			go func() {
				var b []byte
				var err error
				if into {
					b = make([]byte, 32)
					var n int
					n, err = m.recvInto(context.Background(), 1, tag, b)
					b = b[:n]
				} else {
					b, err = m.recv(context.Background(), 1, tag)
				}
				if err != nil {
					t.Error(err)
				}
				got <- b
			}()
			for i := registerAfter; i < len(chunks); i++ {
				deliver(i)
			}
			if b := <-got; !bytes.Equal(b, msg) {
				t.Errorf("registered after %d chunks, into=%v: got %q", registerAfter, into, b)
			}
		}
	}
}

func TestMailboxErrors(t *testing.T) {
	ctx := context.Background()
	m := newMailbox(0, 3, 0)
	if err := m.deliver(1, Tag{Seq: 1}, 0, 4, 1, []byte("abcd")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.recvInto(ctx, 1, Tag{Seq: 1}, make([]byte, 3)); err == nil || !strings.Contains(err.Error(), "sent 4 bytes") {
		t.Errorf("message longer than the buffer: %v", err)
	}
	if err := m.deliver(1, Tag{Seq: 2}, 3, 4, 1, []byte("ab")); err == nil {
		t.Error("chunk beyond the message accepted")
	}

	// A message sent before its sender left is still received; the next is not.
	if err := m.deliver(2, Tag{Seq: 3}, 0, 1, 1, []byte("x")); err != nil {
		t.Fatal(err)
	}
	m.control(2, -1, "")
	if b, err := m.recv(ctx, 2, Tag{Seq: 3}); err != nil || string(b) != "x" {
		t.Errorf("message before leave: %q, %v", b, err)
	}
	var re *RankError
	if _, err := m.recv(ctx, 2, Tag{Seq: 4}); !errors.As(err, &re) || re.Rank != 2 || !strings.Contains(err.Error(), "left the job") {
		t.Errorf("message after leave: %v", err)
	}
	// Leaving affects only that peer; an abort affects everything.
	if err := m.deliver(1, Tag{Seq: 5}, 0, 1, 1, []byte("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.recv(ctx, 1, Tag{Seq: 5}); err != nil {
		t.Errorf("rank 1 after rank 2 left: %v", err)
	}
	m.control(1, 2, "did not answer")
	if _, err := m.recv(ctx, 1, Tag{Seq: 6}); err == nil || err.Error() != "collective: rank 2 did not answer (reported by rank 1)" {
		t.Errorf("after abort: %v", err)
	}
}

// A silent peer breaks the mailbox within the timeout; one that keeps
// heartbeating does not, however long the wait.
func TestMailboxLiveness(t *testing.T) {
	const timeout = 200 * time.Millisecond
	m := newMailbox(0, 3, timeout)
	m.startWatch()
	defer m.stopWatching()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // rank 1 heartbeats, rank 2 is silent
		tick := time.NewTicker(heartbeatInterval(timeout))
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				m.heard(1)
			}
		}
	}()
	start := time.Now()
	_, err := m.recv(context.Background(), 1, Tag{Seq: 1})
	var re *RankError
	if !errors.As(err, &re) || re.Rank != 2 {
		t.Fatalf("recv from live rank 1 while rank 2 is silent: %v", err)
	}
	if took := time.Since(start); took > timeout {
		t.Errorf("rank 2's silence noticed after %v, more than the timeout %v", took, timeout)
	}
}
