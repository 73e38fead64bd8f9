package collective

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Measurement is one bandwidth measurement, as `hpcrun bench` prints it:
// one JSON object per line.
type Measurement struct {
	Op    string `json:"op"`    // "allreduce" or "pubsub"
	Rank  int    `json:"rank"`  // the rank that reports it
	Host  string `json:"host"`  // that rank's host name
	Dtype string `json:"dtype"` // "float32" (allreduce) or "bytes" (pubsub)
	// Bytes is the allreduce buffer per rank, or the bytes sent per
	// pubsub iteration.
	Bytes int64 `json:"bytes"`
	// Seconds is the mean time of one iteration; for allreduce that of the
	// slowest rank.
	Seconds float64 `json:"seconds"`
	// GBps is in 1e9 bytes per second. Allreduce: the bus bandwidth as
	// NCCL defines it, algbw·2(n−1)/n with algbw = Bytes/Seconds, which is
	// what each rank sends and receives per second and so comparable to a
	// link's bandwidth. Pubsub: Bytes/Seconds.
	GBps float64 `json:"gbps"`
}

// BenchAllreduce times iters float32 sum Allreduces of a bytes-byte buffer
// (after one untimed warm-up) and reports the bus bandwidth. It is a
// collective: every rank calls it with the same arguments, and every rank
// gets the slowest rank's time.
func BenchAllreduce(ctx context.Context, c *Comm, bytes, iters int) (Measurement, error) {
	if bytes < 0 || iters < 1 {
		return Measurement{}, fmt.Errorf("collective: bench allreduce of %d bytes, %d iterations", bytes, iters)
	}
	buf := make([]float32, bytes/4)
	for i := range buf {
		buf[i] = 1
	}
	if err := Allreduce(ctx, c, buf, Sum); err != nil {
		return Measurement{}, err
	}
	if err := c.Barrier(ctx); err != nil {
		return Measurement{}, err
	}
	start := time.Now()
	for range iters {
		if err := Allreduce(ctx, c, buf, Sum); err != nil {
			return Measurement{}, err
		}
	}
	took := []float64{time.Since(start).Seconds()}
	if err := Allreduce(ctx, c, took, Max); err != nil {
		return Measurement{}, err
	}
	m := Measurement{Op: "allreduce", Rank: c.Rank(), Host: hostname(), Dtype: "float32",
		Bytes: int64(len(buf) * 4), Seconds: took[0] / float64(iters)}
	n := float64(c.Size())
	m.GBps = float64(m.Bytes) / m.Seconds * 2 * (n - 1) / n / 1e9
	return m, nil
}

// BenchPubSub measures raw NATS bandwidth through the job's server: rank 0
// opens two fresh connections, publishes bytes on one in messages as large
// as the transport's (iters times, timed from the first publish until the
// last byte arrives on the other), while the other ranks wait. It is a
// collective: every rank calls it and gets rank 0's measurement. It needs
// the NATS transport.
func BenchPubSub(ctx context.Context, c *Comm, bytes, iters int) (Measurement, error) {
	if c.nats == nil {
		return Measurement{}, errors.New("collective: bench pubsub needs a NATS transport")
	}
	if bytes < 1 || iters < 1 {
		return Measurement{}, fmt.Errorf("collective: bench pubsub of %d bytes, %d iterations", bytes, iters)
	}
	var m Measurement
	var merr error
	if c.Rank() == 0 {
		m, merr = benchPubSub(ctx, c.nats, bytes, iters)
	}
	// Everyone learns rank 0's result (or error).
	var msg []byte
	if c.Rank() == 0 {
		if merr != nil {
			msg = []byte("error: " + merr.Error())
		} else {
			msg, _ = json.Marshal(m)
		}
	}
	msg, err := c.Bcast(ctx, 0, msg)
	if err != nil {
		return Measurement{}, err
	}
	if s, ok := cutPrefix(msg, "error: "); ok {
		return Measurement{}, fmt.Errorf("collective: bench pubsub on rank 0: %s", s)
	}
	if err := json.Unmarshal(msg, &m); err != nil {
		return Measurement{}, fmt.Errorf("collective: bench pubsub: %w", err)
	}
	return m, nil
}

func cutPrefix(b []byte, prefix string) (string, bool) {
	if len(b) >= len(prefix) && string(b[:len(prefix)]) == prefix {
		return string(b[len(prefix):]), true
	}
	return "", false
}

func benchPubSub(ctx context.Context, t *natsTransport, bytes, iters int) (Measurement, error) {
	connect := func(role string) (*nats.Conn, error) {
		opts := []nats.Option{nats.Name("hpcrun bench " + role), nats.NoReconnect()}
		if t.cfg.Secret != "" {
			opts = append(opts, nats.Token(t.cfg.Secret))
		}
		return nats.Connect(t.cfg.URL, opts...)
	}
	pub, err := connect("publisher")
	if err != nil {
		return Measurement{}, err
	}
	defer pub.Close()
	sub, err := connect("subscriber")
	if err != nil {
		return Measurement{}, err
	}
	defer sub.Close()

	subject := fmt.Sprintf("%s.%s.bench.%d", subjectRoot, t.cfg.JobID, t.cfg.Rank)
	var got, want atomic.Int64
	arrived := make(chan struct{}, 1)
	s, err := sub.Subscribe(subject, func(m *nats.Msg) {
		if got.Add(int64(len(m.Data))) >= want.Load() {
			select {
			case arrived <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		return Measurement{}, err
	}
	if err := s.SetPendingLimits(-1, -1); err != nil {
		return Measurement{}, err
	}
	if err := sub.Flush(); err != nil {
		return Measurement{}, err
	}

	msg := make([]byte, t.chunk) // the transport's chunk size
	var total time.Duration
	for i := range iters + 1 { // the first round warms up
		want.Store(int64(i+1) * int64(bytes))
		start := time.Now()
		for left := bytes; left > 0; left -= len(msg) {
			if err := pub.Publish(subject, msg[:min(left, len(msg))]); err != nil {
				return Measurement{}, err
			}
		}
		if err := pub.Flush(); err != nil {
			return Measurement{}, err
		}
		for got.Load() < want.Load() {
			select {
			case <-arrived:
			case <-ctx.Done():
				return Measurement{}, ctx.Err()
			case <-time.After(time.Minute):
				return Measurement{}, fmt.Errorf("pubsub: %d of %d bytes arrived in a minute", got.Load(), want.Load())
			}
		}
		if i > 0 {
			total += time.Since(start)
		}
	}
	m := Measurement{Op: "pubsub", Rank: t.cfg.Rank, Host: hostname(), Dtype: "bytes", Bytes: int64(bytes),
		Seconds: total.Seconds() / float64(iters)}
	m.GBps = float64(bytes) / m.Seconds / 1e9
	return m, nil
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}
