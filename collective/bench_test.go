package collective_test

import (
	"context"
	"fmt"
	"testing"

	"hpcrun/collective"
	"hpcrun/collective/natstest"
)

func sizeName(b int) string {
	if b >= 1<<20 {
		return fmt.Sprintf("%dMiB", b>>20)
	}
	return fmt.Sprintf("%dKiB", b>>10)
}

// BenchmarkAllreduce measures float32 sum allreduce between goroutine
// ranks through an embedded server with the production max_payload. It
// reports NCCL's bus bandwidth as busGB/s.
func BenchmarkAllreduce(b *testing.B) {
	for _, n := range []int{2, 4} {
		for _, size := range []int{1 << 20, 16 << 20, 64 << 20} {
			b.Run(fmt.Sprintf("ranks=%d,bytes=%s", n, sizeName(size)), func(b *testing.B) {
				srv := natstest.RunServerWith(b, collective.DefaultMaxPayload)
				comms := natstest.RanksOn(b, srv, n, collective.Options{})
				bufs := make([][]float32, n)
				for r := range bufs {
					bufs[r] = make([]float32, size/4)
				}
				ctx := context.Background()
				b.SetBytes(int64(size))
				b.ResetTimer()
				errs := natstest.Parallel(comms, func(r int, c *collective.Comm) error {
					for range b.N {
						if err := collective.Allreduce(ctx, c, bufs[r], collective.Sum); err != nil {
							return err
						}
					}
					return nil
				})
				b.StopTimer()
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
				secs := b.Elapsed().Seconds() / float64(b.N)
				b.ReportMetric(float64(size)/secs*2*float64(n-1)/float64(n)/1e9, "busGB/s")
			})
		}
	}
}

// BenchmarkPubSub measures raw NATS publish→subscribe bandwidth through the
// same kind of server, in messages as large as the transport's.
func BenchmarkPubSub(b *testing.B) {
	for _, size := range []int{1 << 20, 16 << 20, 64 << 20} {
		b.Run("bytes="+sizeName(size), func(b *testing.B) {
			srv := natstest.RunServerWith(b, collective.DefaultMaxPayload)
			c := natstest.RanksOn(b, srv, 1, collective.Options{})[0]
			m, err := collective.BenchPubSub(context.Background(), c, size, b.N)
			if err != nil {
				b.Fatal(err)
			}
			// BenchPubSub times its own iterations (without connecting and
			// warming up): report those.
			b.ReportMetric(m.Seconds*1e9, "ns/op")
			b.ReportMetric(m.GBps, "GB/s")
		})
	}
}
