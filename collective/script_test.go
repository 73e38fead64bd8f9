package collective_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"hpcrun/collective"
	"hpcrun/collective/natstest"
)

// TestScripts runs the fault scenarios in testdata/*.script on the
// in-process network. A script is a list of commands, one per line:
//
//	ranks N               job size (first)
//	timeout D             failure-detection timeout
//	chunk B               split messages into chunks of B bytes
//	jitter D SEED         delay every chunk by a random [0, D) from now on
//	late R D              rank R starts the next step D late
//	badlen R              rank R's next allgather gets a buffer one byte short
//	kill R                rank R dies now (goes silent)
//	killafter R K         rank R dies after sending K more chunks
//	close R               rank R closes its Comm now (normal exit)
//	abort R REASON...     rank R aborts with REASON
//	step OP [N]           every live rank runs OP: barrier, bcast N,
//	                      allgather N, allreduce N (float64 sum of random
//	                      values, checked against a serial sum)
//	ok RANKS              the last step succeeded on RANKS (all, or 0,2,3)
//	fail RANKS TEXT...    the last step failed on RANKS with TEXT in the error
//	within D              every rank's last step ended within D of its start
//	                      (plus D and 1 s of slack for a loaded machine)
//	identical             the last two allreduce steps gave the same bits on every rank
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.script")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".script"), func(t *testing.T) {
			t.Parallel()
			runScript(t, f)
		})
	}
}

type scriptRank struct {
	comm    *collective.Comm
	gone    bool          // killed or closed: runs no more steps
	late    time.Duration // delay before the next step
	badLen  bool          // next allgather with a wrong buffer
	err     error         // last step's result
	took    time.Duration // last step's duration, from its start on this rank
	results [][]float64   // allreduce results, in order
}

func runScript(t *testing.T, file string) {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	var (
		net     *collective.Network
		ranks   []*scriptRank
		timeout = 10 * time.Second
		chunk   int
	)
	start := func() {
		if net != nil {
			return
		}
		net = collective.NewNetwork(len(ranks), collective.NetworkOptions{Timeout: timeout, MaxChunk: chunk})
		for r, c := range net.Comms() {
			ranks[r].comm = c
		}
	}
	defer func() {
		if net != nil {
			for _, r := range ranks {
				if !r.gone {
					_ = r.comm.Close()
				}
			}
			net.Close()
		}
	}()
	rankList := func(s string) []int {
		var out []int
		if s == "all" {
			for r, rk := range ranks {
				if !rk.gone {
					out = append(out, r)
				}
			}
			return out
		}
		for f := range strings.SplitSeq(s, ",") {
			r, err := strconv.Atoi(f)
			if err != nil || r < 0 || r >= len(ranks) {
				t.Fatalf("bad rank %q", f)
			}
			out = append(out, r)
		}
		return out
	}
	dur := func(s string) time.Duration {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	num := func(s string) int {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		args := strings.Fields(text)
		t.Logf("%s:%d: %s", filepath.Base(file), line, text)
		need := func(n int) {
			if len(args) < n+1 {
				t.Fatalf("line %d: %s needs %d arguments", line, args[0], n)
			}
		}
		switch args[0] {
		case "ranks":
			need(1)
			for range num(args[1]) {
				ranks = append(ranks, &scriptRank{})
			}
		case "timeout":
			need(1)
			timeout = dur(args[1])
		case "chunk":
			need(1)
			chunk = num(args[1])
		case "jitter":
			need(2)
			start()
			net.Jitter(dur(args[1]), uint64(num(args[2])))
		case "late":
			need(2)
			ranks[num(args[1])].late = dur(args[2])
		case "badlen":
			need(1)
			ranks[num(args[1])].badLen = true
		case "kill":
			need(1)
			start()
			r := num(args[1])
			net.Kill(r)
			ranks[r].gone = true
		case "killafter":
			need(2)
			start()
			net.KillAfter(num(args[1]), num(args[2]))
		case "close":
			need(1)
			start()
			r := num(args[1])
			if err := ranks[r].comm.Close(); err != nil {
				t.Fatalf("line %d: close: %v", line, err)
			}
			ranks[r].gone = true
		case "abort":
			need(2)
			start()
			r := num(args[1])
			_ = ranks[r].comm.Abort(errors.New(strings.Join(args[2:], " ")))
			ranks[r].gone = true
		case "step":
			need(1)
			start()
			runStep(t, ranks, args[1:])
		case "ok":
			need(1)
			for _, r := range rankList(args[1]) {
				if err := ranks[r].err; err != nil {
					t.Errorf("line %d: rank %d failed: %v", line, r, err)
				}
			}
		case "fail":
			need(2)
			want := strings.Join(args[2:], " ")
			for _, r := range rankList(args[1]) {
				t.Logf("rank %d after %v: %v", r, ranks[r].took.Round(time.Millisecond), ranks[r].err)
				if err := ranks[r].err; err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("line %d: rank %d: error %v, want one containing %q", line, r, err, want)
				}
			}
		case "within":
			need(1)
			// Failure detection is bounded by the timeout, but a loaded
			// 2-core CI machine can starve the heartbeat goroutines: allow
			// the timeout again plus a second of scheduling slack.
			limit := 2*dur(args[1]) + time.Second
			for r, rk := range ranks {
				if rk.took > limit {
					t.Errorf("line %d: rank %d took %v, more than %v", line, r, rk.took, limit)
				}
			}
		case "identical":
			var ref []float64
			for r, rk := range ranks {
				if rk.gone {
					continue
				}
				n := len(rk.results)
				if n < 2 {
					t.Fatalf("line %d: rank %d has %d allreduce results", line, r, n)
				}
				if !bitsEqual(rk.results[n-1], rk.results[n-2]) {
					t.Errorf("line %d: rank %d: allreduce results differ between runs", line, r)
				}
				if ref == nil {
					ref = rk.results[n-1]
				} else if !bitsEqual(ref, rk.results[n-1]) {
					t.Errorf("line %d: rank %d's allreduce result differs from the first rank's", line, r)
				}
			}
		default:
			t.Fatalf("line %d: unknown command %q", line, args[0])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

// runStep runs one collective on every live rank and waits for all of
// them (a hang fails the test after a minute instead of hanging it).
func runStep(t *testing.T, ranks []*scriptRank, args []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	op, n := args[0], 0
	if len(args) > 1 {
		n, _ = strconv.Atoi(args[1])
	}
	var comms []*collective.Comm
	for _, rk := range ranks {
		comms = append(comms, rk.comm)
	}
	size := len(ranks)
	input := func(r int) []float64 {
		rng := rand.New(rand.NewPCG(uint64(r), uint64(n)))
		v := make([]float64, n)
		for i := range v {
			v[i] = rng.NormFloat64() * math.Exp(rng.NormFloat64()*5)
		}
		return v
	}
	natstest.Parallel(comms, func(r int, c *collective.Comm) error {
		rk := ranks[r]
		if rk.gone {
			rk.err, rk.took = nil, 0
			return nil
		}
		if rk.late > 0 {
			time.Sleep(rk.late) // the script's point: this rank is late
			rk.late = 0
		}
		begin := time.Now()
		switch op {
		case "barrier":
			rk.err = c.Barrier(ctx)
		case "bcast":
			var got []byte
			got, rk.err = c.Bcast(ctx, 0, natstest.Bytes(0, 0, n))
			if rk.err == nil && !slices.Equal(got, natstest.Bytes(0, 0, n)) {
				rk.err = errors.New("bcast: wrong bytes")
			}
		case "allgather":
			recv := make([]byte, size*n)
			if rk.badLen {
				recv, rk.badLen = recv[:len(recv)-1], false
			}
			rk.err = c.Allgather(ctx, natstest.Bytes(r, 0, n), recv)
			for i := 0; rk.err == nil && i < size; i++ {
				if !slices.Equal(recv[i*n:(i+1)*n], natstest.Bytes(i, 0, n)) {
					rk.err = fmt.Errorf("allgather: wrong bytes from rank %d", i)
				}
			}
		case "allreduce":
			buf := input(r)
			rk.err = collective.Allreduce(ctx, c, buf, collective.Sum)
			if rk.err == nil {
				rk.err = checkSum(buf, size, input)
				rk.results = append(rk.results, buf)
			}
		default:
			rk.err = fmt.Errorf("unknown op %q", op)
		}
		rk.took = time.Since(begin)
		return nil
	})
}

func checkSum(got []float64, size int, input func(int) []float64) error {
	want := make([]float64, len(got))
	for r := range size {
		for i, v := range input(r) {
			want[i] += v
		}
	}
	for i := range got {
		if d := math.Abs(got[i] - want[i]); d > 1e-9*math.Abs(want[i])+1e-300 {
			return fmt.Errorf("allreduce: element %d = %g, want %g", i, got[i], want[i])
		}
	}
	return nil
}

func bitsEqual(a, b []float64) bool {
	return slices.EqualFunc(a, b, func(x, y float64) bool { return math.Float64bits(x) == math.Float64bits(y) })
}
