package collective

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Options is everything Connect needs. The caller fills it, typically
// with OptionsFromEnv plus Host0 resolved from the Slurm node list.
type Options struct {
	Rank, Size int
	LocalRank  int    // rank among the ranks on this host (informational)
	JobID      string // namespaces subjects: letters, digits, '-', '_'
	// Secret is the job's token. The embedded server requires it; for an
	// external URL it is sent as the token if set. String() and JSON leave
	// it out.
	Secret string `json:"-"`
	// URL of an external NATS server (runtime.nats_url). If empty, rank 0
	// starts an embedded server.
	URL string
	// Host0 is rank 0's host name, resolved by the caller (e.g. from
	// SLURM_STEP_NODELIST). If set, rank 0's server listens on all
	// interfaces at Port and the others connect to Host0:Port. If empty,
	// rank 0 listens on 127.0.0.1 at a free port and publishes its URL in
	// RendezvousDir.
	Host0 string
	// Port of the embedded server when Host0 is set; 0 derives one from
	// JobID (in [10000, 30000)).
	Port int
	// RendezvousDir is a directory all ranks can read (a shared workdir);
	// rank 0 writes the server URL there (mode 0600, never the secret).
	RendezvousDir string
	// Timeout bounds how long any rank waits for a peer that has died or
	// stopped answering, and how long ranks wait for each other to join.
	// A live rank that is merely slow to reach a collective is waited for.
	// Default 60s.
	Timeout time.Duration
	// MaxChunk caps the payload bytes per NATS message (default 1 MiB,
	// and never more than the server's max_payload allows).
	MaxChunk int
	// MaxPayload is the embedded server's max_payload (default 8 MiB).
	MaxPayload int
	Logger     *slog.Logger
}

// String describes o without the secret.
func (o Options) String() string {
	secret := "unset"
	if o.Secret != "" {
		secret = "set"
	}
	return fmt.Sprintf("{rank %d of %d, local rank %d, job %q, secret %s, url %q, host0 %q, port %d, rendezvous %q, timeout %v}",
		o.Rank, o.Size, o.LocalRank, o.JobID, secret, o.URL, o.Host0, o.Port, o.RendezvousDir, o.Timeout)
}

// LogValue keeps the secret out of logs.
func (o Options) LogValue() slog.Value { return slog.StringValue(o.String()) }

// DefaultTimeout is Options.Timeout when unset.
const DefaultTimeout = 60 * time.Second

// Environment variables read by OptionsFromEnv and set by Launch.
const (
	EnvRank       = "HPCRUN_RANK"
	EnvSize       = "HPCRUN_SIZE"
	EnvLocalRank  = "HPCRUN_LOCAL_RANK"
	EnvJobID      = "HPCRUN_JOB_ID"
	EnvSecret     = "HPCRUN_JOB_SECRET"
	EnvURL        = "HPCRUN_NATS_URL"
	EnvHost0      = "HPCRUN_HOST0"
	EnvRendezvous = "HPCRUN_RENDEZVOUS"
	EnvTimeout    = "HPCRUN_TIMEOUT"
)

// OptionsFromEnv reads the HPCRUN_* variables that Launch sets, falling
// back to Slurm's SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID and
// SLURM_JOB_ID (with "-" SLURM_STEP_ID appended, so that concurrent steps
// of one job do not share subjects). With neither, it describes a
// one-rank job. It does not expand Slurm node lists: the caller sets Host0.
func OptionsFromEnv(getenv func(string) string) (Options, error) {
	first := func(keys ...string) (string, string) {
		for _, k := range keys {
			if v := getenv(k); v != "" {
				return k, v
			}
		}
		return "", ""
	}
	var o Options
	var errs []error
	atoi := func(def int, keys ...string) int {
		k, v := first(keys...)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: not an integer", k, v))
		}
		return n
	}
	o.Rank = atoi(0, EnvRank, "SLURM_PROCID")
	o.Size = atoi(1, EnvSize, "SLURM_NTASKS")
	o.LocalRank = atoi(0, EnvLocalRank, "SLURM_LOCALID")
	if _, id := first(EnvJobID); id != "" {
		o.JobID = id
	} else if id := getenv("SLURM_JOB_ID"); id != "" {
		o.JobID = id
		if step := getenv("SLURM_STEP_ID"); step != "" {
			o.JobID += "-" + step
		}
	} else {
		o.JobID = "local"
	}
	o.Secret = getenv(EnvSecret)
	o.URL = getenv(EnvURL)
	o.Host0 = getenv(EnvHost0)
	o.RendezvousDir = getenv(EnvRendezvous)
	if v := getenv(EnvTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s=%q: not a positive duration", EnvTimeout, v))
		}
		o.Timeout = d
	}
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("collective: %w", err)
	}
	return o, nil
}

// NewSecret returns a fresh random job secret (256 bits, hex).
func NewSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("collective: new secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Connect joins the job described by o and returns once every rank has
// joined:
//
//  1. o.URL set: every rank connects there.
//  2. Otherwise rank 0 starts an embedded NATS server requiring o.Secret
//     and the others find it at Host0:Port, or through the rendezvous
//     file in RendezvousDir.
//
// A one-rank job without URL needs no server at all.
func Connect(ctx context.Context, o Options) (*Comm, error) {
	if o.Size < 1 || o.Rank < 0 || o.Rank >= o.Size {
		return nil, fmt.Errorf("collective: rank %d of %d", o.Rank, o.Size)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("rank", o.Rank)
	if o.Size == 1 && o.URL == "" {
		return NewNetwork(1, NetworkOptions{}).Comms()[0], nil
	}
	if err := checkJobID(o.JobID); err != nil {
		return nil, err
	}

	cfg := natsConfig{
		URL: o.URL, Secret: o.Secret, JobID: o.JobID, Rank: o.Rank, Size: o.Size,
		Timeout: o.Timeout, MaxChunk: o.MaxChunk, ServerRank: -1, Logger: log,
	}
	var srv *Server
	var rendezvous string // the file rank 0 wrote
	var resolve func() (string, error)
	if o.URL == "" {
		if o.Secret == "" {
			return nil, errors.New("collective: no NATS URL and no job secret: refusing to start an open server")
		}
		cfg.ServerRank = 0
		port := o.Port
		if o.Host0 != "" && port == 0 {
			port = jobPort(o.JobID)
		}
		switch {
		case o.Rank == 0:
			so := ServerOptions{Host: "127.0.0.1", Port: port, Secret: o.Secret, MaxPayload: o.MaxPayload, Logger: log}
			if o.Host0 != "" {
				so.AdvertiseHost = o.Host0
				if !isLoopback(o.Host0) {
					so.Host = "0.0.0.0" // ranks on other nodes connect
				}
			}
			var err error
			if srv, err = StartServer(so); err != nil {
				return nil, err
			}
			cfg.URL = srv.URL()
			cfg.WaitPeersOnClose = true
			if o.Host0 == "" {
				if o.RendezvousDir == "" {
					srv.Shutdown()
					return nil, errors.New("collective: rank 0 needs Host0 or a rendezvous directory to publish its server")
				}
				if rendezvous, err = writeRendezvous(o.RendezvousDir, o.JobID, srv.URL()); err != nil {
					srv.Shutdown()
					return nil, err
				}
			}
		case o.Host0 != "":
			cfg.URL = "nats://" + net.JoinHostPort(o.Host0, strconv.Itoa(port))
		case o.RendezvousDir != "":
			// Read (again) on every try: a stale file may name a server
			// that is gone.
			resolve = func() (string, error) { return readRendezvous(o.RendezvousDir, o.JobID) }
		default:
			return nil, errors.New("collective: no NATS URL, Host0 or rendezvous directory: cannot find rank 0's server")
		}
	}

	if resolve == nil {
		resolve = func() (string, error) { return cfg.URL, nil }
	}
	// Ranks looking for rank 0's server retry until it is up. They also
	// retry a refused secret: the address may still belong to another
	// job (a stale rendezvous file, a port another job's rank 0 holds).
	t, err := dialRetry(ctx, cfg, resolve, o.Rank != 0 && o.URL == "")
	if err != nil {
		if srv != nil {
			srv.Shutdown()
			os.Remove(rendezvous)
		}
		return nil, err
	}
	log.Debug("joined job", "job", o.JobID, "size", o.Size, "url", t.cfg.URL)
	c := NewComm(t)
	if srv != nil {
		c.onClose = append(c.onClose, func() error {
			srv.Shutdown()
			if rendezvous != "" {
				if err := os.Remove(rendezvous); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
			}
			return nil
		})
	}
	return c, nil
}

// dialRetry dials the URL that resolve returns, retrying until Timeout
// if retry is set. A rank that does not join is not retried, nor a
// refused secret unless retry is set.
func dialRetry(ctx context.Context, cfg natsConfig, resolve func() (string, error), retry bool) (*natsTransport, error) {
	deadline := time.Now().Add(cfg.Timeout)
	wait := 10 * time.Millisecond
	for {
		url, err := resolve()
		if err == nil {
			cfg.URL = url
			var t *natsTransport
			if t, err = dialNATS(ctx, cfg); err == nil {
				return t, nil
			}
			if errors.As(err, new(*RankError)) || isAuthError(err) && !retry {
				return nil, err
			}
		}
		if !retry {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("collective: rank %d: no server within %v: %w", cfg.Rank, cfg.Timeout, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 500*time.Millisecond)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isAuthError(err error) bool {
	return err != nil && strings.Contains(strings.ToLower(err.Error()), "authorization violation")
}

// jobPort derives the embedded server's port from the job id, so that
// ranks on other nodes know it without a file.
func jobPort(jobID string) int {
	h := fnv.New32a()
	h.Write([]byte(jobID))
	return 10000 + int(h.Sum32()%20000)
}

// RendezvousFile is the file in dir where rank 0 of job publishes its
// embedded server's URL.
func RendezvousFile(dir, jobID string) string {
	return filepath.Join(dir, "hpcrun-"+jobID+".nats-url")
}

// writeRendezvous writes url atomically (temp file + rename, mode 0600).
func writeRendezvous(dir, jobID, url string) (string, error) {
	f, err := os.CreateTemp(dir, ".hpcrun-rendezvous-*")
	if err != nil {
		return "", fmt.Errorf("collective: rendezvous: %w", err)
	}
	_, err = f.WriteString(url + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	path := RendezvousFile(dir, jobID)
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("collective: rendezvous: %w", err)
	}
	return path, nil
}

func readRendezvous(dir, jobID string) (string, error) {
	b, err := os.ReadFile(RendezvousFile(dir, jobID))
	if err != nil {
		return "", fmt.Errorf("rendezvous: %w", err)
	}
	url := strings.TrimSpace(string(b))
	if url == "" {
		return "", errors.New("rendezvous: empty file")
	}
	return url, nil
}
