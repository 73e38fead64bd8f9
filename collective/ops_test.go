package collective_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"hpcrun/collective"
	"hpcrun/collective/natstest"
)

// sizesAbove returns the sizes every op is checked at: empty, one, odd,
// and one odd size above limit bytes.
func sizesAbove(limit int) []int { return []int{0, 1, 7, 1001, limit + 13} }

func checkAll(t *testing.T, comms []*collective.Comm, sizes []int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := natstest.Parallel(comms, func(_ int, c *collective.Comm) error {
		return natstest.CheckAll(ctx, c, sizes)
	})
	for r, err := range errs {
		if err != nil {
			t.Errorf("rank %d: %v", r, err)
		}
	}
}

// In process, with tiny chunks so that every message above 64 bytes is
// reassembled, and both allreduce algorithms.
func TestOpsInProcess(t *testing.T) {
	for n := 1; n <= 4; n++ {
		for _, algo := range []string{"default", "ring"} {
			t.Run(fmt.Sprintf("ranks=%d/allreduce=%s", n, algo), func(t *testing.T) {
				net := collective.NewNetwork(n, collective.NetworkOptions{Timeout: 10 * time.Second, MaxChunk: 64})
				defer net.Close()
				comms := net.Comms()
				if algo == "ring" {
					for _, c := range comms {
						collective.SetSmallReduce(c, 0)
					}
				}
				checkAll(t, comms, sizesAbove(1000))
			})
		}
	}
}

func TestOpsEmbeddedServer(t *testing.T) {
	srv := natstest.RunServer(t)
	for n := 1; n <= 4; n++ {
		t.Run(fmt.Sprintf("ranks=%d", n), func(t *testing.T) {
			// Above max_payload even for the ring's segments of allreduce.
			checkAll(t, natstest.RanksOn(t, srv, n, collective.Options{}), sizesAbove(srv.MaxPayload))
		})
	}
}

func TestOpsExternalServer(t *testing.T) {
	srv := natstest.RunExternalServer(t, 64<<10)
	for n := 1; n <= 4; n++ {
		t.Run(fmt.Sprintf("ranks=%d", n), func(t *testing.T) {
			comms := natstest.RanksOn(t, srv, n, collective.Options{})
			for _, c := range comms {
				collective.SetSmallReduce(c, 1024) // so that 1001 elements use the ring too
			}
			checkAll(t, comms, sizesAbove(4*srv.MaxPayload))
		})
	}
}

// Abort from another goroutine (say, on SIGINT) ends a collective that is
// waiting for a live peer, here and on the peers.
func TestAbortWhileWaiting(t *testing.T) {
	net := collective.NewNetwork(2, collective.NetworkOptions{Timeout: 10 * time.Second})
	defer net.Close()
	comms := net.Comms()
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { done <- comms[0].Barrier(ctx) }() // rank 1 never comes
	if err := comms[0].Abort(errors.New("interrupted")); err != nil {
		t.Fatal(err)
	}
	var err error
	natstest.CheckFor(t, 10*time.Second, func() error {
		select {
		case err = <-done:
			return nil
		default:
			return errors.New("barrier still waiting after Abort")
		}
	})
	if err == nil || !strings.Contains(err.Error(), "rank 0 aborted: interrupted") {
		t.Errorf("rank 0's barrier: %v", err)
	}
	if err := comms[1].Barrier(ctx); err == nil || !strings.Contains(err.Error(), "rank 0 aborted: interrupted") {
		t.Errorf("rank 1's barrier: %v", err)
	}
}
