package collective_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"hpcrun/collective"
)

// How `hpcrun run --ranks N` starts a local job outside Slurm: the launcher
// re-runs the same program N times; each child finds its rank, the job id
// and the secret in its environment.
func ExampleLaunchLocal() {
	ctx := context.Background()
	if os.Getenv(collective.EnvRank) == "" { // the launcher
		err := collective.LaunchLocal(ctx, 4, os.Args, os.Environ(), time.Minute)
		if err != nil { // e.g. "rank 2 (pid 1234) exited: signal: killed"
			fmt.Fprintln(os.Stderr, "hpcrun:", err)
			os.Exit(1)
		}
		return
	}
	// A rank (see ExampleConnect).
}

// How a rank joins its job, under Slurm or under LaunchLocal. Under Slurm
// the caller also sets Host0 from SLURM_STEP_NODELIST (rank 0's node), or
// RendezvousDir to a shared work directory, and URL from runtime.nats_url.
func ExampleConnect() {
	ctx := context.Background()
	o, err := collective.OptionsFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	o.Logger = slog.Default()
	c, err := collective.Connect(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close() // rank 0 keeps its server up until the others have closed too

	sums := []float64{float64(c.Rank()), 1}
	if err := collective.Allreduce(ctx, c, sums, collective.Sum); err != nil {
		// e.g. "collective: rank 2 did not answer within 1m0s (...) (allreduce #1)"
		fmt.Fprintln(os.Stderr, err)
		return
	}
	fmt.Println("ranks:", sums[1])
}

// What `hpcrun bench --ops pubsub,allreduce --bytes ...` runs on every rank.
func ExampleBenchAllreduce() {
	ctx := context.Background()
	o, _ := collective.OptionsFromEnv(os.Getenv)
	c, err := collective.Connect(ctx, o)
	if err != nil {
		return
	}
	defer c.Close()
	for _, size := range []int{1 << 20, 16 << 20, 256 << 20} {
		raw, err := collective.BenchPubSub(ctx, c, size, 3) // rank 0 measures, all get it
		if err != nil {
			return
		}
		ar, err := collective.BenchAllreduce(ctx, c, size, 3)
		if err != nil {
			return
		}
		if c.Rank() == 0 {
			fmt.Printf("%+v\n%+v\n", raw, ar) // or json.Marshal: {"op","rank","host","dtype","bytes","seconds","gbps"}
		}
	}
}
