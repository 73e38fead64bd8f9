package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"hpcrun/collective"
	"hpcrun/dataset"
	"hpcrun/kernels/cuda"
	"hpcrun/slurm"
)

// Measurement is one line of `bench --json`: SPEC.md's fields, plus impl
// (hpcrun or the reference it is compared with) and peak_rss.
type Measurement struct {
	Op      string  `json:"op"`
	Impl    string  `json:"impl"`
	Rank    int     `json:"rank"`
	Host    string  `json:"host"`
	DType   string  `json:"dtype,omitempty"`
	NQ      int     `json:"nq,omitempty"`
	NB      int     `json:"nb,omitempty"`
	Dim     int     `json:"dim,omitempty"`
	K       int     `json:"k,omitempty"`
	Bytes   int64   `json:"bytes,omitempty"`
	Seconds float64 `json:"seconds"`
	GFLOPS  float64 `json:"gflops,omitempty"`
	GBps    float64 `json:"gbps,omitempty"`
	PeakRSS int64   `json:"peak_rss,omitempty"`
	Note    string  `json:"note,omitempty"`
}

type benchOpts struct {
	ranks   int
	nq, nb  int
	dim, k  int
	dtype   string
	bytes   []int64
	file    string
	set     map[string]bool // flags given explicitly
	host    string
	threads int
	comm    *collective.Comm // the bench job's Comm (size 1 when alone)
	gpu     *cuda.Backend    // --backend cuda: the kernel ops run on this rank's GPU
}

// A benchOp measures one op on this rank. Ops whose measurement needs every
// rank (collectives) must be called on every rank in the same order; the
// others run on each rank independently (so a slow node stands out).
type benchOp func(ctx context.Context, o *benchOpts) ([]Measurement, error)

// benchOps maps op names to their runners; more register from init()s in
// bench_*.go files.
var benchOps = map[string]benchOp{
	"read": benchRead,
}

// benchNeedsRanks lists ops that measure between ranks.
var benchNeedsRanks = map[string]bool{}

// benchOrder is the order ops run in when --ops is not given: the ones a
// single rank measures (pubsub before allreduce needs ranks, so not here).
func benchOrder() []string {
	var names []string
	for n := range benchOps {
		if !benchNeedsRanks[n] {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// cmdBench runs the benchmark as a job: under srun every task is a rank;
// outside Slurm, --ranks N > 1 (or a collective op) launches N local rank
// processes, else it runs here. Every rank measures; rank 0 gathers the
// measurements, prints a table per rank plus min/median/max, and writes
// the JSON.
func cmdBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	o := &benchOpts{}
	fs.IntVar(&o.ranks, "ranks", 1, "local ranks to launch outside Slurm (collective ops need at least 2)")
	ops := fs.String("ops", "", "ops to run, comma-separated (default: all built)")
	fs.IntVar(&o.nq, "nq", 10000, "query rows")
	fs.IntVar(&o.nb, "nb", 200000, "base rows (read: rows of the shard, default 1 GiB worth)")
	fs.IntVar(&o.dim, "dim", 512, "dimension")
	fs.IntVar(&o.k, "k", 100, "top-k (centroid: number of centroids)")
	fs.StringVar(&o.dtype, "dtype", "float32", "float32 | float16")
	byteList := fs.String("bytes", "", "payload sizes for allreduce/pubsub, comma-separated (default 1MiB,4MiB,16MiB,64MiB,256MiB)")
	fs.StringVar(&o.file, "file", "", "read: the .npy shard to read (default: a generated 1 GiB float16 shard)")
	fs.IntVar(&o.threads, "threads", 0, "compute threads per rank (0 = the rank's share of the cores)")
	jsonOut := fs.String("json", "", "write the measurements as a JSON array to FILE (- = stdout; %j = the Slurm job id)")
	backend := fs.String("backend", "cpu", "the similarity-engine ops (topk maxarg shiftedmax centroid prefixmax) run on: cpu | cuda (this rank's GPU)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("bench: unexpected argument %q", pos[0])
	}
	o.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	if o.dtype != "float32" && o.dtype != "float16" {
		return usagef("bench: --dtype must be float32 or float16")
	}
	if *backend != "cpu" && *backend != "cuda" {
		return usagef("bench: --backend must be cpu or cuda")
	}
	if *byteList != "" {
		for _, s := range strings.Split(*byteList, ",") {
			n, err := parseBytes(s)
			if err != nil {
				return usagef("bench: --bytes: %v", err)
			}
			o.bytes = append(o.bytes, n)
		}
	} else {
		o.bytes = []int64{1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20}
	}
	o.host, _ = os.Hostname()
	var names []string
	collectiveOps := false
	if *ops == "" {
		names = benchOrder()
	} else {
		for _, n := range strings.Split(*ops, ",") {
			n = strings.TrimSpace(n)
			if benchOps[n] == nil {
				var all []string
				for k := range benchOps {
					all = append(all, k)
				}
				sort.Strings(all)
				return usagef("bench: unknown or not yet built op %q (built: %s)", n, strings.Join(all, ", "))
			}
			names = append(names, n)
		}
	}
	for _, n := range names {
		collectiveOps = collectiveOps || benchNeedsRanks[n]
	}
	// raw pubsub first, so each allreduce line can give its share of it
	sort.SliceStable(names, func(i, j int) bool { return names[i] == "pubsub" && names[j] == "allreduce" })

	// Join (or launch) the bench job.
	var opts *collective.Options
	switch {
	case slurm.InSlurm() || os.Getenv(collective.EnvRank) != "":
		co, err := collective.OptionsFromEnv(os.Getenv)
		if err != nil {
			return usagef("bench: %v", err)
		}
		if slurm.InSlurm() {
			se, err := slurm.LoadEnv(os.Getenv)
			if err != nil {
				return usagef("bench: %v", err)
			}
			co.Host0 = se.FirstHost()
			if o.threads == 0 {
				o.threads = se.Threads()
			}
			if co.RendezvousDir == "" {
				co.RendezvousDir, _ = os.Getwd()
			}
		}
		opts = &co
	case o.ranks > 1:
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		l := &collective.Launch{Ranks: o.ranks, Argv: append([]string{exe, "bench"}, args...), Env: os.Environ(), Stderr: stderrW}
		return l.Run(ctx)
	default:
		if collectiveOps {
			return usagef("bench: %s measure between ranks: use --ranks 2 or more (or srun)", strings.Join(names, ","))
		}
		opts = &collective.Options{Rank: 0, Size: 1}
	}
	if o.threads == 0 {
		o.threads = max(1, runtime.NumCPU()/max(1, localRanks(opts)))
	}
	if *backend == "cuda" {
		g, err := cuda.New(gpuOrdinal(), o.threads)
		if err != nil {
			return fmt.Errorf("bench --backend cuda: rank %d: %w", opts.Rank, err)
		}
		defer g.Close()
		o.gpu = g
	}
	comm, err := collective.Connect(ctx, *opts)
	if err != nil {
		return fmt.Errorf("bench: rank %d: joining: %w", opts.Rank, err)
	}
	o.comm = comm
	var mine []Measurement
	for _, n := range names {
		ms, err := benchOps[n](ctx, o)
		if err != nil {
			comm.Abort(err)
			return fmt.Errorf("bench %s: rank %d: %w", n, comm.Rank(), err)
		}
		for i := range ms {
			ms[i].Rank, ms[i].Host = comm.Rank(), o.host
		}
		mine = append(mine, ms...)
	}
	b, err := json.Marshal(mine)
	if err != nil {
		return err
	}
	parts, err := comm.Gatherv(ctx, 0, b)
	if err != nil {
		return fmt.Errorf("bench: gathering results: %w", err)
	}
	if comm.Rank() != 0 {
		return comm.Close()
	}
	var all []Measurement
	for r, p := range parts {
		var ms []Measurement
		if err := json.Unmarshal(p, &ms); err != nil {
			return fmt.Errorf("bench: results of rank %d: %w", r, err)
		}
		all = append(all, ms...)
	}
	if err := comm.Close(); err != nil {
		return err
	}
	printTable(os.Stdout, all)
	if comm.Size() > 1 {
		printSummary(os.Stdout, all)
	}
	if *jsonOut != "" {
		*jsonOut = strings.ReplaceAll(*jsonOut, "%j", firstNonEmpty(os.Getenv("SLURM_JOB_ID"), "local"))
		b, err := json.MarshalIndent(all, "", "  ")
		if err != nil {
			return err
		}
		b = append(b, '\n')
		if *jsonOut == "-" {
			_, err = os.Stdout.Write(b)
			return err
		}
		return dataset.WriteFileAtomic(*jsonOut, b)
	}
	return nil
}

// localRanks is how many ranks share this host's cores.
func localRanks(o *collective.Options) int {
	if se, err := slurm.LoadEnv(os.Getenv); err == nil && se.InSlurm {
		return max(1, se.TasksOnNode())
	}
	return max(1, o.Size)
}

// printSummary prints, per op and shape, min/median/max over ranks of the
// rate (GFLOP/s, else GB/s) and which rank was slowest.
func printSummary(w io.Writer, ms []Measurement) {
	type key struct{ op, impl, dtype, shape string }
	groups := map[key][]Measurement{}
	var order []key
	for _, m := range ms {
		k := key{m.Op, m.Impl, m.DType, shapeOf(m)}
		if m.Bytes > 0 {
			k.shape = strings.TrimSpace(k.shape + " " + strconv.FormatInt(m.Bytes, 10) + " B")
		}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], m)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\nop\timpl\tdtype\tshape\tranks\tmin\tmedian\tmax\tunit\tslowest\t")
	for _, k := range order {
		g := groups[k]
		rate := func(m Measurement) float64 {
			if m.GFLOPS > 0 {
				return m.GFLOPS
			}
			return m.GBps
		}
		unit := "GB/s"
		if rate(g[0]) == g[0].GFLOPS && g[0].GFLOPS > 0 {
			unit = "GFLOP/s"
		}
		sort.Slice(g, func(i, j int) bool { return rate(g[i]) < rate(g[j]) })
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%.2f\t%.2f\t%.2f\t%s\trank %d (%s)\t\n", k.op, k.impl, k.dtype, k.shape, len(g),
			rate(g[0]), rate(g[len(g)/2]), rate(g[len(g)-1]), unit, g[0].Rank, g[0].Host)
	}
	tw.Flush()
}

// parseBytes reads 1048576, 1MiB, 256MiB, 1GiB.
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if strings.HasSuffix(s, u.suf) {
			s, mult = strings.TrimSuffix(s, u.suf), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// shapeOf is "nq x nb x dim k=K" for the kernel ops, "" otherwise.
func shapeOf(m Measurement) string {
	if m.NQ > 0 || m.NB > 0 {
		return fmt.Sprintf("%dx%dx%d k=%d", m.NQ, m.NB, m.Dim, m.K)
	}
	return ""
}

func printTable(w io.Writer, ms []Measurement) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\timpl\trank\tdtype\tshape\tbytes\tseconds\tGFLOP/s\tGB/s\tpeak RSS\tnote\t")
	for _, m := range ms {
		shape := shapeOf(m)
		f := func(v float64, prec int) string {
			if v == 0 {
				return "-"
			}
			return strconv.FormatFloat(v, 'f', prec, 64)
		}
		rss := "-"
		if m.PeakRSS > 0 {
			rss = fmt.Sprintf("%.0f MiB", float64(m.PeakRSS)/(1<<20))
		}
		by := "-"
		if m.Bytes > 0 {
			by = strconv.FormatInt(m.Bytes, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%.4f\t%s\t%s\t%s\t%s\t\n", m.Op, m.Impl, m.Rank, m.DType, shape, by, m.Seconds, f(m.GFLOPS, 1), f(m.GBps, 2), rss, m.Note)
	}
	tw.Flush()
}

// ---------------------------------------------------------------- read

const benchReadChild = "__bench-read"

// benchRead reads a float16 shard (1 GiB by default) with the dataset
// reader (decode, NaN and norm checks) in a child process, beside
// `cat FILE > /dev/null` on the same file in the same run; page cache warm
// for both. The child's peak RSS shows memory is bounded by the block size.
func benchRead(ctx context.Context, o *benchOpts) ([]Measurement, error) {
	path := o.file
	if path == "" {
		rows := 1 << 20
		if o.set["nb"] {
			rows = o.nb
		}
		dir, err := os.MkdirTemp("", "hpcrun-bench-read-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "img_emb_0.npy")
		if err := writeSignShard(path, rows, o.dim); err != nil {
			return nil, err
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	catOnce := func() (float64, error) {
		t0 := time.Now()
		cmd := exec.CommandContext(ctx, "cat", path)
		devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			return 0, err
		}
		defer devnull.Close()
		cmd.Stdout = devnull
		if err := cmd.Run(); err != nil {
			return 0, err
		}
		return time.Since(t0).Seconds(), nil
	}
	type child struct {
		Seconds float64 `json:"seconds"`
		Rows    int     `json:"rows"`
		PeakRSS int64   `json:"peak_rss"`
	}
	readOnce := func() (child, error) {
		cmd := exec.CommandContext(ctx, exe, benchReadChild, path)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return child{}, fmt.Errorf("reader child: %w", err)
		}
		var c child
		err = json.Unmarshal(out, &c)
		return c, err
	}
	if _, err := catOnce(); err != nil { // warm the page cache
		return nil, err
	}
	bestCat, bestRead := math.Inf(1), child{Seconds: math.Inf(1)}
	for rep := 0; rep < 3; rep++ {
		s, err := catOnce()
		if err != nil {
			return nil, err
		}
		bestCat = min(bestCat, s)
		c, err := readOnce()
		if err != nil {
			return nil, err
		}
		if c.Seconds < bestRead.Seconds {
			bestRead = c
		}
	}
	size := st.Size()
	gb := func(s float64) float64 { return float64(size) / s / 1e9 }
	ratio := gb(bestRead.Seconds) / gb(bestCat)
	return []Measurement{
		{Op: "read", Impl: "cat", Host: o.host, DType: "float16", Bytes: size, Seconds: bestCat, GBps: gb(bestCat), Note: "cat FILE > /dev/null, page cache warm"},
		{Op: "read", Impl: "hpcrun", Host: o.host, DType: "float16", Bytes: size, Seconds: bestRead.Seconds, GBps: gb(bestRead.Seconds), PeakRSS: bestRead.PeakRSS,
			Note: fmt.Sprintf("%.0f%% of cat; decode+NaN+norm checks; %d rows", 100*ratio, bestRead.Rows)},
	}, nil
}

// cmdBenchReadChild reads one shard and prints seconds and peak RSS.
func cmdBenchReadChild(args []string) error {
	if len(args) != 1 {
		return usagef("%s FILE", benchReadChild)
	}
	t0 := time.Now()
	m, err := dataset.OpenMatrix(args[0])
	if err != nil {
		return err
	}
	rows := 0
	err = m.Blocks(16384, dataset.Check{}, func(b dataset.Block) error { rows += b.Rows; return nil })
	m.Close()
	if err != nil {
		return err
	}
	sec := time.Since(t0).Seconds()
	return json.NewEncoder(os.Stdout).Encode(map[string]any{"seconds": sec, "rows": rows, "peak_rss": peakRSS()})
}

// peakRSS is this process's VmHWM in bytes (Linux), 0 elsewhere.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// writeSignShard writes rows unit vectors whose entries are ±1/sqrt(dim)
// (random signs): fast to make, and valid embeddings.
func writeSignShard(path string, rows, dim int) error {
	w, err := dataset.CreateMatrix(path, dataset.Float16, dim)
	if err != nil {
		return err
	}
	v := float32(1 / math.Sqrt(float64(dim)))
	const chunk = 8192
	buf := make([]float32, chunk*dim)
	rng := rand.New(rand.NewPCG(1, uint64(rows)))
	for r0 := 0; r0 < rows; r0 += chunk {
		n := min(chunk, rows-r0)
		for i := 0; i < n*dim; i += 64 {
			bits := rng.Uint64()
			for j := 0; j < 64 && i+j < n*dim; j++ {
				buf[i+j] = v
				if bits>>j&1 == 1 {
					buf[i+j] = -v
				}
			}
		}
		if err := w.Write(buf[:n*dim]); err != nil {
			w.Abort()
			return err
		}
	}
	return w.Close()
}
