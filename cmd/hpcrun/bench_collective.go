package main

import (
	"context"
	"fmt"

	"hpcrun/collective"
)

// pubsub and allreduce measure between ranks: raw NATS publish→subscribe
// bandwidth through the job's server, and the ring allreduce's bus
// bandwidth (NCCL's busbw = algbw·2(n−1)/n), size by size in the same run.
func init() {
	benchOps["pubsub"] = benchCollective("pubsub")
	benchOps["allreduce"] = benchCollective("allreduce")
	benchNeedsRanks["pubsub"] = true
	benchNeedsRanks["allreduce"] = true
}

// lastPubSub holds rank 0's raw bandwidth per size, for the ratio note.
var lastPubSub = map[int64]float64{}

func benchCollective(op string) benchOp {
	return func(ctx context.Context, o *benchOpts) ([]Measurement, error) {
		var out []Measurement
		for _, size := range o.bytes {
			iters := int(min(10, max(2, (64<<20)/max(size, 1))))
			var m collective.Measurement
			var err error
			if op == "pubsub" {
				m, err = collective.BenchPubSub(ctx, o.comm, int(size), iters)
			} else {
				m, err = collective.BenchAllreduce(ctx, o.comm, int(size), iters)
			}
			if err != nil {
				return nil, err
			}
			if o.comm.Rank() != 0 { // one line per size: rank 0 reports for the job
				continue
			}
			mm := Measurement{Op: op, Impl: "hpcrun", DType: m.Dtype, Bytes: m.Bytes, Seconds: m.Seconds, GBps: m.GBps}
			if op == "pubsub" {
				mm.Impl = "nats"
				mm.Note = "raw NATS publish→subscribe"
				lastPubSub[size] = m.GBps
			} else {
				mm.Note = fmt.Sprintf("busbw, %d ranks", o.comm.Size())
				if raw := lastPubSub[size]; raw > 0 {
					mm.Note += fmt.Sprintf(", %.0f%% of raw pubsub", 100*m.GBps/raw)
				}
			}
			out = append(out, mm)
		}
		return out, nil
	}
}
