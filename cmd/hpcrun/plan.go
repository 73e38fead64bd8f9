package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"text/tabwriter"

	"hpcrun/stages"
)

// Rates a plan assumes when no --bench file gives measured ones, per rank:
// GFLOP/s per op and GB/s for I/O and allreduce. The CPU figures are this
// project's 2-core AVX-512 machine. The GPU op rates were measured on one
// H200 (docs/gpu/2026-11-27-h200, cudabench, kernel version 5): top-k end
// to end from host memory at the paper's shape, 269 TFLOP/s (run4, on the
// persistent grid; 244 on one block per tile, run1); the argmax
// ops (NearestCentroid, MaxArg, ShiftedMax) at their kernel rate, 255
// TFLOP/s, which is what they reach when the resident set is large (k =
// 50,000 centroids, 200,000 eval images; with 4,096 centroids NearestCentroid
// reaches 123 TFLOP/s on points kept on the device, 67 streamed from host
// memory); PrefixMax (dedup) was not measured and is put at 150. Reads,
// allreduce and embedding are assumed. Those GPU rates are float16 against
// float16: the pipeline's ops with a float32 operand (k-means' centroids, the
// eval embeddings: centroid, topk, maxarg, shiftedmax) get them with
// runtime.gpu_precision = "float16", half of them with "float16x2", with
// "float32" and runtime.gpu_filter (the defaults) the share gpuFilterShare of
// them, and with "float32" and no filter the FFMA kernels' rate, gpuFFMA.
//
// gpuFFMA: version 6 with float32 queries against 1,000,000 float16 rows on
// the H200 (run1): top-k 27, NearestCentroid 21, MaxArg 36 TFLOP/s.
const gpuFFMA = 25e3

// gpuFilterShare: with runtime.gpu_filter an op on float16 rows runs on the
// tensor cores plus the exact filter's appends and rescoring; measured on the
// H200 as the float16 op's time over the filtered one's: top-k 0.60 at the
// paper's size (50,000 float32 queries x 10,000,000 rows, k = 1,000: 2.096 s
// rounded to float16 in run1, 3.517 s through the filter in run3, both on
// one block per tile; 0.34 at 1,000,000 rows, where the early thresholds
// let in more candidates), MaxArg
// 0.55 (10,000 x 1,000,000: 0.067 vs 0.122 s, run1), NearestCentroid 0.63
// (10,000,000 kept points x 4,096 centroids: 0.340 vs 0.540 s, run1);
// ShiftedMax and PrefixMax (not measured) are put at MaxArg's.
var gpuFilterShare = map[string]float64{"topk": 0.60, "centroid": 0.63, "maxarg": 0.55, "shiftedmax": 0.55, "prefixmax": 0.55}

var planDefaults = map[string]map[string]float64{
	"cpu": {"centroid": 180, "topk": 170, "maxarg": 180, "shiftedmax": 180, "prefixmax": 150,
		"read_gbps": 2, "allreduce_gbps": 1, "embed_ips": 150},
	"gpu": {"centroid": 255e3, "topk": 269e3, "maxarg": 255e3, "shiftedmax": 255e3, "prefixmax": 150e3,
		"read_gbps": 5, "allreduce_gbps": 10, "embed_ips": 4000},
}

type planRow struct {
	Stage      string  `json:"stage"`
	Seconds    float64 `json:"seconds"`
	MemPerRank int64   `json:"mem_per_rank_bytes"`
	BytesRead  int64   `json:"bytes_read"`
	BytesNATS  int64   `json:"bytes_nats"`
	Work       string  `json:"work"`
}

// cmdPlan estimates per stage the seconds, memory per rank, bytes read and
// bytes through NATS, from the config's dataset sizes (or --points/--dim)
// and throughputs (measured: --bench FILE from `hpcrun bench --json`;
// otherwise the assumed rates above).
func cmdPlan(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	var sets multiFlag
	fs.Var(&sets, "set", "override a config key: KEY=VALUE (repeatable)")
	nodes := fs.Int("nodes", 0, "nodes (required)")
	gpn := fs.Int("gpus-per-node", 0, "GPUs per node (0 = CPU ranks, one per node)")
	tpn := fs.Int("ntasks-per-node", 0, "ranks per node (default: GPUs per node, or 1)")
	benchFile := fs.String("bench", "", "JSON from `hpcrun bench --json`: measured rates per rank")
	points := fs.Float64("points", 0, "base points (default: the config's base dataset)")
	dim := fs.Int("dim", 0, "embedding dimension (default: the config's)")
	evalN := fs.Float64("eval", 0, "eval images over all eval sets (default: the config's)")
	refN := fs.Float64("reference", 0, "reference (ImageNet-train) points (default: the config's)")
	jsonOut := fs.Bool("json", false, "print JSON instead of a table")
	cfg, err := loadConfigArgs(fs, &sets, args)
	if err != nil {
		return err
	}
	if *nodes < 1 {
		return usagef("plan: --nodes N is required")
	}
	kind := "cpu"
	ranksPerNode := 1
	if *gpn > 0 {
		kind, ranksPerNode = "gpu", *gpn
	}
	if *tpn > 0 {
		ranksPerNode = *tpn
	}
	R := float64(*nodes * ranksPerNode)
	rates := map[string]float64{}
	for k, v := range planDefaults[kind] {
		rates[k] = v
	}
	source := "default " + kind + " rates (see README)"
	if kind == "gpu" {
		prec := cfg.Runtime.GPUPrecision
		filter := prec == "float32" && cfg.Runtime.GPUFilter
		for _, op := range []string{"centroid", "topk", "maxarg", "shiftedmax"} {
			switch {
			case prec == "float16x2":
				rates[op] /= 2
			case filter:
				rates[op] *= gpuFilterShare[op]
			case prec == "float32":
				rates[op] = gpuFFMA
			}
		}
		if filter {
			rates["prefixmax"] *= gpuFilterShare["prefixmax"]
		}
		source += ", gpu_precision " + prec
		switch {
		case filter:
			source += " with gpu_filter (the tensor-core rates times the exact filter's measured share)"
		case prec == "float32":
			source += " without gpu_filter (float32 operands on the FFMA kernels)"
		}
	}
	if *benchFile != "" {
		if err := ratesFromBench(*benchFile, rates); err != nil {
			return err
		}
		source = "measured in " + *benchFile
	}

	size := func(name string) (float64, int) {
		if name == "" {
			return 0, 0
		}
		d, err := stages.OpenDataset(cfg, name)
		if err != nil {
			return 0, 0
		}
		return float64(d.Rows), d.Dim
	}
	baseName := ""
	switch {
	case cfg.KMeans != nil:
		baseName = cfg.KMeans.Dataset
	case cfg.Prune != nil:
		baseName = cfg.Prune.Base
	}
	n, d := size(baseName)
	if *points > 0 {
		n = *points
	}
	if *dim > 0 {
		d = *dim
	}
	if n == 0 || d == 0 {
		return usagef("plan: no base size: give --points and --dim, or a config whose datasets exist")
	}
	q := *evalN
	if q == 0 && cfg.Prune != nil {
		for _, e := range cfg.Prune.Eval {
			m, _ := size(e)
			q += m
		}
	}
	r := *refN
	if r == 0 && cfg.Prune != nil {
		r, _ = size(cfg.Prune.Reference)
	}
	D := float64(d)
	const f16 = 2
	secs := func(flops float64, op string) float64 { return flops / (R * rates[op] * 1e9) }
	readS := func(bytes float64) float64 { return bytes / (R * rates["read_gbps"] * 1e9) }
	var rows []planRow
	if cfg.KMeans != nil {
		k := float64(cfg.KMeans.K)
		it := float64(cfg.KMeans.MaxIter)
		// A rank keeps its shards resident when they fit (32 GiB): read once.
		shard := n / R * D * f16
		reads, mem := it, int64(0)
		if shard <= 32<<30 {
			reads, mem = 1, int64(shard)
		}
		nats := it * (k*D*8 + k*8) * 2 // ring allreduce moves ~2x the buffer per rank
		ar := nats / (rates["allreduce_gbps"] * 1e9)
		rows = append(rows, planRow{"kmeans", it*secs(2*n*k*D, "centroid") + reads*readS(n*D*f16) + ar, mem + int64(k*D*4*2+k*D*8+16384*D*4), int64(reads * n * D * f16), int64(nats),
			fmt.Sprintf("%.0f iterations (max_iter) × 2·n·k·d = %.3g FLOP each; shards read %.0f×", it, 2*n*k*D, reads)})
	}
	if cfg.Dedup != nil && cfg.KMeans != nil {
		k := float64(cfg.KMeans.K)
		flops := n * n * D / k // balanced clusters: k · (n/k)² · d
		rows = append(rows, planRow{"dedup", secs(flops, "prefixmax") + 2*readS(n*D*f16), int64(2 * 16384 * D * 4), int64(2 * n * D * f16), int64(R * R * 64),
			fmt.Sprintf("cluster shuffle (write + read %.3g B) + Σ m²·d = %.3g FLOP", n*D*f16, flops)})
	}
	if cfg.Sims != nil {
		var flops, read float64
		for _, b := range cfg.Sims.Base {
			bn, _ := size(b)
			if b == baseName {
				bn = n
			}
			flops += 2 * q * bn * D
			read += bn * D * f16
		}
		k := float64(cfg.Sims.K)
		rows = append(rows, planRow{"sims", secs(flops, "topk") + secs(flops, "maxarg") + readS(read), int64(q*D*4 + 2*q*k*12), int64(read), int64(R * q * k * 12),
			fmt.Sprintf("top-k and max/argmax: 2 × 2·q·n·d = %.3g FLOP (q = %.0f)", 2*flops, q)})
	}
	if cfg.Prune != nil {
		flops := 2*q*n*D + 2*q*r*D
		rows = append(rows, planRow{"prune", secs(flops, "shiftedmax") + readS(n*D*f16), int64(q * D * 4 * 2), int64(n * D * f16), int64(R * q * 8),
			fmt.Sprintf("reference top-1 + exact shifted max: %.3g FLOP", flops)})
	}
	if cfg.Subsample != nil {
		const sampleBytes = 30 << 10 // an average LAION webdataset sample (jpg + txt + json)
		rows = append(rows, planRow{"subsample", readS(2 * n * sampleBytes), 64 << 20, int64(n * sampleBytes), int64(R * 4096),
			"stream the tars once, write the kept samples (30 KiB per sample assumed)"})
	}
	if len(cfg.Embed) > 0 {
		ips := rates["embed_ips"]
		var imgs float64
		for range cfg.Embed {
			imgs += q
		}
		rows = append(rows, planRow{"embed", imgs / (R * ips), 1 << 30, int64(imgs * 110 * 1024), 0,
			fmt.Sprintf("%.0f images at %.0f images/s per rank", imgs, ips)})
	}
	if *jsonOut {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"ranks": R, "nodes": *nodes, "kind": kind, "points": n, "dim": d, "rates": rates, "rates_source": source, "stages": rows})
	}
	fmt.Printf("plan: %s on %d node(s) × %d rank(s) = %.0f ranks (%s); base %.3g points × %d dims, %.0f eval images\n",
		cfg.Job.Name, *nodes, ranksPerNode, R, source, n, d, q)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "stage\tseconds\ttime\tmem/rank\tread\tNATS\twork")
	var total float64
	for _, row := range rows {
		total += row.Seconds
		fmt.Fprintf(tw, "%s\t%.3g\t%s\t%s\t%s\t%s\t%s\n", row.Stage, row.Seconds, hms(row.Seconds), human(row.MemPerRank), human(row.BytesRead), human(row.BytesNATS), row.Work)
	}
	fmt.Fprintf(tw, "total\t%.3g\t%s\t\t\t\t\n", total, hms(total))
	tw.Flush()
	keys := make([]string, 0, len(rates))
	for k := range rates {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Print("rates per rank:")
	for _, k := range keys {
		fmt.Printf(" %s=%g", k, rates[k])
	}
	fmt.Println(" (GFLOP/s unless named)")
	return nil
}

// ratesFromBench takes the median hpcrun rate per op from a bench JSON.
func ratesFromBench(path string, rates map[string]float64) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return usagef("plan: --bench: %v", err)
	}
	var ms []Measurement
	if err := json.Unmarshal(b, &ms); err != nil {
		return usagef("plan: --bench %s: %v", path, err)
	}
	by := map[string][]float64{}
	for _, m := range ms {
		if m.Impl != "" && m.Impl != "hpcrun" {
			continue
		}
		switch {
		case m.GFLOPS > 0 && m.Op != "peak":
			by[m.Op] = append(by[m.Op], m.GFLOPS)
		case m.Op == "read":
			by["read_gbps"] = append(by["read_gbps"], m.GBps)
		case m.Op == "allreduce":
			by["allreduce_gbps"] = append(by["allreduce_gbps"], m.GBps)
		}
	}
	for k, v := range by {
		sort.Float64s(v)
		rates[k] = v[len(v)/2]
	}
	return nil
}

func hms(s float64) string {
	if math.IsInf(s, 0) || math.IsNaN(s) {
		return "?"
	}
	t := int64(s + 0.5)
	return fmt.Sprintf("%dh%02dm%02ds", t/3600, t/60%60, t%60)
}

func human(b int64) string {
	f := float64(b)
	for _, u := range []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"} {
		if f < 1024 || u == "PiB" {
			return fmt.Sprintf("%.3g %s", f, u)
		}
		f /= 1024
	}
	return ""
}
