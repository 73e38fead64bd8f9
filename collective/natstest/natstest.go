// Package natstest runs NATS servers and ranks for tests of package
// collective and of code built on it: an embedded server (RunServer), the
// Debian nats-server binary as an external server (RunExternalServer),
// n connected Comm values (Ranks, RanksOn), the one poller every test
// wait goes through (CheckFor), and a conformance check of every
// collective against a serial computation (CheckAll).
package natstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"hpcrun/collective"
)

// Server is a running NATS server for a test.
type Server struct {
	URL        string
	Secret     string // token clients must present
	MaxPayload int    // the server's max_payload
}

// TestMaxPayload is the max_payload of RunServer's server: NATS's default
// 1 MiB, so that tests of payloads above it stay small.
const TestMaxPayload = 1 << 20

// RunServer starts an embedded nats-server on a random loopback port,
// requiring a fresh secret, and shuts it down when the test ends.
func RunServer(t testing.TB) *Server {
	t.Helper()
	return RunServerWith(t, TestMaxPayload)
}

// RunServerWith is RunServer with another max_payload, e.g.
// collective.DefaultMaxPayload as in production.
func RunServerWith(t testing.TB, maxPayload int) *Server {
	t.Helper()
	secret := NewSecret(t)
	s, err := collective.StartServer(collective.ServerOptions{Secret: secret, MaxPayload: maxPayload})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return &Server{URL: s.URL(), Secret: secret, MaxPayload: maxPayload}
}

// NATSServerBinary is Debian's nats-server.
const NATSServerBinary = "/usr/sbin/nats-server"

// RunExternalServer starts NATSServerBinary on a random loopback port with a
// fresh token and the given max_payload (0: the server's default, 1 MiB),
// and kills it when the test ends. It skips the test if the binary is
// missing. The token goes in a 0600 config file, never on the command line.
func RunExternalServer(t testing.TB, maxPayload int) *Server {
	t.Helper()
	if _, err := os.Stat(NATSServerBinary); err != nil {
		t.Skipf("no external NATS server: %v (apt-get install nats-server)", err)
	}
	if maxPayload <= 0 {
		maxPayload = 1 << 20
	}
	secret := NewSecret(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	body := fmt.Sprintf("listen: \"127.0.0.1:-1\"\nauthorization { token: %q }\nmax_payload: %d\nmax_pending: %d\n",
		secret, maxPayload, 1<<30)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(NATSServerBinary, "-c", conf, "--ports_file_dir", dir)
	cmd.Stderr = &prefixWriter{t: t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	portsFile := filepath.Join(dir, fmt.Sprintf("nats-server_%d.ports", cmd.Process.Pid))
	var url string
	CheckFor(t, 10*time.Second, func() error {
		b, err := os.ReadFile(portsFile)
		if err != nil {
			return err
		}
		var ports struct {
			Nats []string `json:"nats"`
		}
		if err := json.Unmarshal(b, &ports); err != nil || len(ports.Nats) == 0 {
			return fmt.Errorf("ports file %s: %q", portsFile, b)
		}
		url = ports.Nats[0]
		return nil
	})
	return &Server{URL: url, Secret: secret, MaxPayload: maxPayload}
}

// prefixWriter passes the server's log to t.Log.
type prefixWriter struct{ t testing.TB }

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.t.Logf("nats-server: %s", p)
	return len(p), nil
}

// NewSecret returns a fresh job secret.
func NewSecret(t testing.TB) string {
	t.Helper()
	s, err := collective.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// NewJobID returns a fresh job id.
func NewJobID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "test-" + hex.EncodeToString(b)
}

// Ranks starts an embedded server and returns n Comms connected to it as
// one job, closed when the test ends.
func Ranks(t testing.TB, n int) []*collective.Comm {
	t.Helper()
	return RanksOn(t, RunServer(t), n, collective.Options{})
}

// RanksOn connects n ranks of a new job (fresh job id unless o.JobID is
// set) to srv, concurrently as separate processes would, using o for
// everything but URL, Secret, Rank and Size. Timeout defaults to 10s.
func RanksOn(t testing.TB, srv *Server, n int, o collective.Options) []*collective.Comm {
	t.Helper()
	o.URL, o.Secret, o.Size = srv.URL, srv.Secret, n
	if o.JobID == "" {
		o.JobID = NewJobID()
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	comms := make([]*collective.Comm, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := range n {
		wg.Go(func() {
			ro := o
			ro.Rank = r
			comms[r], errs[r] = collective.Connect(context.Background(), ro)
		})
	}
	wg.Wait()
	t.Cleanup(func() { CloseAll(comms) })
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	return comms
}

// CloseAll closes every non-nil Comm, concurrently.
func CloseAll(comms []*collective.Comm) {
	var wg sync.WaitGroup
	for _, c := range comms {
		if c != nil {
			wg.Go(func() { _ = c.Close() })
		}
	}
	wg.Wait()
}

// CheckFor calls f until it returns nil, every few milliseconds, and fails
// the test with f's last error if that has not happened within timeout.
// Every wait in the tests goes through it; none sleeps a fixed time.
func CheckFor(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(wait)
		wait = min(wait*2, 50*time.Millisecond)
	}
}

// Parallel runs f(rank, comm) for every Comm in its own goroutine, as the
// ranks of a job, and returns their errors in rank order.
func Parallel(comms []*collective.Comm, f func(rank int, c *collective.Comm) error) []error {
	errs := make([]error, len(comms))
	var wg sync.WaitGroup
	for r, c := range comms {
		wg.Go(func() { errs[r] = f(r, c) })
	}
	wg.Wait()
	return errs
}
