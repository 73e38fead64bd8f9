package collective_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"hpcrun/collective"
	"hpcrun/collective/natstest"
)

// A client without the job's secret, or with a wrong one, is refused by
// both the embedded server and the external one.
func TestUnauthenticatedClientRefused(t *testing.T) {
	for _, kind := range []string{"embedded", "external"} {
		t.Run(kind, func(t *testing.T) {
			var srv *natstest.Server
			if kind == "embedded" {
				srv = natstest.RunServer(t)
			} else {
				srv = natstest.RunExternalServer(t, 0)
			}
			for _, opts := range [][]nats.Option{nil, {nats.Token("not-the-secret")}} {
				nc, err := nats.Connect(srv.URL, append(opts, nats.NoReconnect())...)
				if err == nil {
					nc.Close()
					t.Fatalf("client without the secret connected to %s", srv.URL)
				}
				if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
					t.Errorf("error %v, want an authorization violation", err)
				}
			}
			// A rank with the wrong secret fails at once instead of retrying.
			_, err := collective.Connect(context.Background(), collective.Options{
				Rank: 1, Size: 2, JobID: "intruder", URL: srv.URL, Secret: "wrong", Timeout: time.Minute,
			})
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
				t.Errorf("Connect with a wrong secret: %v, want an authorization violation", err)
			}
			nc, err := nats.Connect(srv.URL, nats.Token(srv.Secret))
			if err != nil {
				t.Fatalf("client with the secret: %v", err)
			}
			nc.Close()
		})
	}
}

// Two jobs on one server at once, with the same rank count and so the
// same sequence of subjects but for the job id, each get their own
// correct results.
func TestTwoJobsOneServer(t *testing.T) {
	srv := natstest.RunServer(t)
	jobs := [][]*collective.Comm{
		natstest.RanksOn(t, srv, 3, collective.Options{JobID: "job-a"}),
		natstest.RanksOn(t, srv, 3, collective.Options{JobID: "job-b"}),
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([][]error, len(jobs))
	for j, comms := range jobs {
		wg.Go(func() {
			errs[j] = natstest.Parallel(comms, func(r int, c *collective.Comm) error {
				if err := natstest.CheckAll(ctx, c, []int{0, 1, 999, srv.MaxPayload + 13}); err != nil {
					return err
				}
				// Job-specific values: a message crossing jobs would show.
				buf := make([]int64, 100_000)
				for i := range buf {
					buf[i] = int64((j+1)*1000 + r)
				}
				if err := collective.Allreduce(ctx, c, buf, collective.Sum); err != nil {
					return err
				}
				want := int64(3*(j+1)*1000 + 0 + 1 + 2)
				for i, v := range buf {
					if v != want {
						return fmt.Errorf("element %d = %d, want %d", i, v, want)
					}
				}
				return nil
			})
		})
	}
	wg.Wait()
	for j := range jobs {
		for r, err := range errs[j] {
			if err != nil {
				t.Errorf("job %d rank %d: %v", j, r, err)
			}
		}
	}
}

// Bootstrap without a URL: rank 0 starts the embedded server and publishes
// its URL (not the secret) in a 0600 rendezvous file; the others find it.
func TestBootstrapRendezvous(t *testing.T) {
	dir := t.TempDir()
	secret := natstest.NewSecret(t)
	job := natstest.NewJobID()
	comms := connectAll(t, 3, collective.Options{JobID: job, Secret: secret, RendezvousDir: dir, Timeout: 10 * time.Second})

	path := collective.RendezvousFile(dir, job)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("rendezvous file mode %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	url := strings.TrimSpace(string(b))
	if strings.Contains(string(b), secret) || !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Errorf("rendezvous file holds %q, want only a loopback URL", b)
	}
	if nc, err := nats.Connect(url, nats.NoReconnect()); err == nil {
		nc.Close()
		t.Error("embedded server accepted a client without the secret")
	}
	checkAll(t, comms, []int{0, 5, 100_000})

	// A normal exit: every Close succeeds, in whatever order the ranks get
	// there (rank 0 keeps its server up until the others have left).
	for r, err := range natstest.Parallel(comms, func(_ int, c *collective.Comm) error { return c.Close() }) {
		if err != nil {
			t.Errorf("rank %d: close: %v", r, err)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rendezvous file left behind: %v", err)
	}
	natstest.CheckFor(t, 10*time.Second, func() error {
		if nc, err := nats.Connect(url, nats.Token(secret), nats.NoReconnect()); err == nil {
			nc.Close()
			return errors.New("embedded server still up after rank 0 closed")
		}
		return nil
	})
}

// Bootstrap with Host0 (as under Slurm): the others connect to rank 0's
// host at the agreed port, retrying until its server is up.
func TestBootstrapHost0(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	comms := connectAll(t, 3, collective.Options{
		JobID: natstest.NewJobID(), Secret: natstest.NewSecret(t), Host0: "127.0.0.1", Port: port, Timeout: 10 * time.Second,
	})
	checkAll(t, comms, []int{3})
}

// connectAll runs Connect for every rank concurrently, rank 0 last so that
// the others have to wait for its server.
func connectAll(t *testing.T, n int, o collective.Options) []*collective.Comm {
	t.Helper()
	o.Size = n
	comms := make([]*collective.Comm, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := n - 1; r >= 0; r-- {
		wg.Go(func() {
			ro := o
			ro.Rank = r
			comms[r], errs[r] = collective.Connect(context.Background(), ro)
		})
	}
	wg.Wait()
	t.Cleanup(func() { natstest.CloseAll(comms) })
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	return comms
}

// A rank that never shows up fails the join within the timeout, naming it.
func TestJoinTimeoutNamesMissingRank(t *testing.T) {
	srv := natstest.RunServer(t)
	start := time.Now()
	_, err := collective.Connect(context.Background(), collective.Options{
		Rank: 0, Size: 3, JobID: natstest.NewJobID(), URL: srv.URL, Secret: srv.Secret, Timeout: 500 * time.Millisecond,
	})
	if err == nil || !strings.Contains(err.Error(), "rank 1 did not join within 500ms") {
		t.Errorf("Connect: %v, want rank 1 did not join", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Connect gave up after %v", took)
	}
}

func TestOptionsFromEnv(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	o, err := collective.OptionsFromEnv(env(map[string]string{
		"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0",
		"HPCRUN_JOB_SECRET": "s3cret", "HPCRUN_TIMEOUT": "90s",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if o.Rank != 3 || o.Size != 8 || o.LocalRank != 1 || o.JobID != "4242-0" || o.Secret != "s3cret" || o.Timeout != 90*time.Second {
		t.Errorf("from Slurm: %+v", o)
	}
	o, err = collective.OptionsFromEnv(env(map[string]string{
		"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "4242",
		collective.EnvRank: "1", collective.EnvSize: "2", collective.EnvJobID: "local-1",
		collective.EnvURL: "nats://127.0.0.1:4222", collective.EnvRendezvous: "/tmp/x",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if o.Rank != 1 || o.Size != 2 || o.JobID != "local-1" || o.URL != "nats://127.0.0.1:4222" || o.RendezvousDir != "/tmp/x" {
		t.Errorf("HPCRUN_* over Slurm: %+v", o)
	}
	o, err = collective.OptionsFromEnv(env(nil))
	if err != nil || o.Rank != 0 || o.Size != 1 {
		t.Errorf("empty environment: %+v, %v", o, err)
	}
	if _, err := collective.OptionsFromEnv(env(map[string]string{collective.EnvRank: "x", collective.EnvTimeout: "soon"})); err == nil ||
		!strings.Contains(err.Error(), collective.EnvRank) || !strings.Contains(err.Error(), collective.EnvTimeout) {
		t.Errorf("bad values: %v", err)
	}
}

// A one-rank job needs no server; every collective is the identity.
func TestSingleRankNeedsNoServer(t *testing.T) {
	c, err := collective.Connect(context.Background(), collective.Options{Rank: 0, Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkAll(t, []*collective.Comm{c}, []int{0, 1, 7, 10_000})
}

func TestLaunchErrors(t *testing.T) {
	err := collective.LaunchLocal(context.Background(), 2, []string{"/nonexistent/hpcrun"}, nil, time.Second)
	if err == nil || !strings.Contains(err.Error(), "start rank 0") {
		t.Errorf("missing program: %v", err)
	}
	// A rank that fails on its own, before any collective.
	err = collective.LaunchLocal(context.Background(), 3, []string{"/bin/sh", "-c", `[ "$HPCRUN_RANK" != 1 ] || exit 7`}, nil, time.Second)
	var le *collective.LaunchError
	if !errors.As(err, &le) || len(le.Failed) != 1 || le.Failed[0].Rank != 1 ||
		!strings.Contains(err.Error(), "rank 1 (pid "+strconv.Itoa(le.Failed[0].PID)+") exited: exit status 7") {
		t.Errorf("rank 1 exiting 7: %v", err)
	}
	// The secret reaches the ranks through the environment only.
	err = collective.LaunchLocal(context.Background(), 2, []string{"/bin/sh", "-c",
		`[ ${#HPCRUN_JOB_SECRET} -eq 64 ] && [ -n "$HPCRUN_JOB_ID" ] && [ "$HPCRUN_SIZE" = 2 ] && [ -d "$HPCRUN_RENDEZVOUS" ]`}, nil, time.Second)
	if err != nil {
		t.Errorf("environment of the ranks: %v", err)
	}
}

// The secret stays out of fmt, slog and JSON renderings of Options.
func TestOptionsHideSecret(t *testing.T) {
	o := collective.Options{Rank: 1, Size: 2, JobID: "j", Secret: "hunter2-hunter2"}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("connect", "options", o)
	js, _ := json.Marshal(o)
	for _, s := range []string{fmt.Sprint(o), fmt.Sprintf("%+v", o), fmt.Sprintf("%v", &o), logged.String(), string(js)} {
		if strings.Contains(s, o.Secret) {
			t.Errorf("secret shown in %q", s)
		}
	}
}
