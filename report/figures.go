package report

// The figures: one function per figure, each returning a plot (or nil and
// why not), drawn at a fixed pixel size; every dataset keeps its colour
// across figures (colours).

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"hpcrun/configs"
	"hpcrun/dataset"
)

// Figures are drawn at dpi dots per inch, figW pixels wide and (most)
// figH high.
const (
	dpi  = 96
	figW = 720
	figH = 420
)

// ---------------------------------------------------------------- colours

// palette is colour-blind safe (Okabe–Ito without its yellow, then more).
var palette = []color.NRGBA{
	{0x00, 0x72, 0xB2, 0xFF}, // blue
	{0xE6, 0x9F, 0x00, 0xFF}, // orange
	{0x00, 0x9E, 0x73, 0xFF}, // bluish green
	{0xCC, 0x79, 0xA7, 0xFF}, // reddish purple
	{0xD5, 0x5E, 0x00, 0xFF}, // vermillion
	{0x56, 0xB4, 0xE9, 0xFF}, // sky blue
	{0x8C, 0x56, 0x4B, 0xFF}, // brown
	{0x94, 0x67, 0xBD, 0xFF}, // purple
	{0xBC, 0xBD, 0x22, 0xFF}, // olive
	{0x17, 0xBE, 0xCF, 0xFF}, // cyan
}

// grey is for what is no single dataset: "combined", random subsets,
// stages.
var grey = color.NRGBA{0x6E, 0x6E, 0x6E, 0xFF}

// colours gives every dataset name of the config one colour, the same in
// every figure and in the page's legends: the prune base and reference
// first (so LAION and ImageNet-train keep the first two colours), then the
// other bases, the eval sets, and the remaining datasets by name.
type colours struct{ byName map[string]color.NRGBA }

func newColours(cfg *configs.Config) *colours {
	var order []string
	add := func(names ...string) {
		for _, n := range names {
			if n != "" && !slices.Contains(order, n) {
				order = append(order, n)
			}
		}
	}
	if cfg.Prune != nil {
		add(cfg.Prune.Base, cfg.Prune.Reference)
	}
	if cfg.Sims != nil {
		add(cfg.Sims.Base...)
	}
	if cfg.KMeans != nil {
		add(cfg.KMeans.Dataset)
	}
	add(evalSets(cfg)...)
	if cfg.Zeroshot != nil {
		add(cfg.Zeroshot.Eval...)
	}
	add(sortedKeys(cfg.Embed)...)
	add(sortedKeys(cfg.Datasets)...)
	c := &colours{byName: map[string]color.NRGBA{}}
	for i, n := range order {
		c.byName[n] = palette[i%len(palette)]
	}
	return c
}

// of is name's colour (grey for a name that is no dataset).
func (c *colours) of(name string) color.NRGBA {
	if col, ok := c.byName[name]; ok {
		return col
	}
	return grey
}

// hex is name's colour as CSS.
func (c *colours) hex(name string) string {
	col := c.of(name)
	return fmt.Sprintf("#%02x%02x%02x", col.R, col.G, col.B)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// light is col mixed with white (a = 0: col, a = 1: white).
func light(col color.NRGBA, a float64) color.NRGBA {
	mix := func(v uint8) uint8 { return uint8(float64(v) + (255-float64(v))*a + 0.5) }
	return color.NRGBA{mix(col.R), mix(col.G), mix(col.B), 0xFF}
}

// translucent is col at opacity a.
func translucent(col color.NRGBA, a float64) color.NRGBA {
	col.A = uint8(255*a + 0.5)
	return col
}

// ---------------------------------------------------------------- drawing

// figureDef is one figure of the page: its file and the function that
// draws it (nil plot: left out, and why).
type figureDef struct {
	name, title, caption string
	height               int
	draw                 func() (*plot.Plot, string)
}

// figureDefs lists the page's figures in page order.
func figureDefs(in *inputs) []figureDef {
	var defs []figureDef
	evals := evalSets(in.cfg)
	if len(evals) == 0 {
		defs = append(defs, figureDef{name: "similarity", draw: func() (*plot.Plot, string) { return nil, "no eval sets" }})
	}
	for _, ev := range evals {
		i := slices.IndexFunc(in.sum.Similarity, func(es EvalSimilarity) bool { return es.Eval == ev })
		defs = append(defs, figureDef{name: "sims_" + ev,
			title:   ev + ": similarity to the nearest neighbour, base vs reference",
			caption: "For every " + ev + " image, the cosine similarity of its nearest neighbour in each dataset. The reference curve is the prune threshold distribution: a base point is pruned when it is more similar to some eval image than that image's nearest reference neighbour.",
			draw: func() (*plot.Plot, string) {
				if i < 0 {
					return nil, "no similarities for " + ev
				}
				return figSimilarity(in, i), ""
			}})
	}
	defs = append(defs,
		figureDef{name: "pruned", title: "What pruning removes", height: figH,
			caption: "Base points pruned per eval set, and for all eval sets together (their union).",
			draw:    func() (*plot.Plot, string) { return figPruned(in) }},
		figureDef{name: "kept", title: "Kept sizes of every subset", height: keptHeight(len(in.sum.Kept)),
			caption: "Ids kept after dedup, after pruning (per eval set and combined), and in each subset (log scale).",
			draw:    func() (*plot.Plot, string) { return figKept(in) }},
		figureDef{name: "kmeans_change", title: "k-means convergence",
			caption: "Fraction of points that changed cluster in each iteration (log scale); k-means stops below the bound.",
			draw:    func() (*plot.Plot, string) { return figKMeansChange(in) }},
		figureDef{name: "cluster_sizes", title: "k-means cluster sizes",
			caption: "Number of clusters per size bin (powers of 2: a log scale of sizes).",
			draw:    func() (*plot.Plot, string) { return figClusterSizes(in) }},
		figureDef{name: "dedup_removed", title: "Dedup: removed fraction vs cluster size",
			caption: "Fraction of each size bin's points that dedup removed as near-duplicates.",
			draw:    func() (*plot.Plot, string) { return figDedupRemoved(in) }},
		figureDef{name: "zeroshot", title: "Zero-shot accuracy",
			caption: "Top-1 (solid) and top-5 (light) zero-shot accuracy per eval set.",
			draw:    func() (*plot.Plot, string) { return figZeroshot(in) }},
		figureDef{name: "stage_times", title: "Stage timings",
			caption: "Wall seconds per stage (rank 0; one dot per rank where report.json has them).",
			draw:    func() (*plot.Plot, string) { return figStageTimes(in) }},
	)
	return defs
}

// drawFigures draws every figure whose outputs are there into dir and
// records it (or why it is left out) in the summary.
func drawFigures(in *inputs, dir string) error {
	for _, d := range figureDefs(in) {
		if reason, ok := in.notes[d.name]; ok {
			in.sum.Missing = append(in.sum.Missing, Missing{Figure: d.name, Reason: reason})
			continue
		}
		p, reason := d.draw()
		if p == nil {
			if reason == "" {
				reason = "no data"
			}
			in.sum.Missing = append(in.sum.Missing, Missing{Figure: d.name, Reason: reason})
			continue
		}
		h := d.height
		if h == 0 {
			h = figH
		}
		file := d.name + ".png"
		if err := savePNG(p, figW, h, filepath.Join(dir, file)); err != nil {
			return fmt.Errorf("figure %s: %w", file, err)
		}
		in.sum.Figures = append(in.sum.Figures, Figure{Name: d.name, File: file, Title: d.title, Caption: d.caption, Width: figW, Height: h})
	}
	return nil
}

// savePNG draws p at w×h pixels into path, atomically.
func savePNG(p *plot.Plot, w, h int, path string) error {
	c := vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(px(w), px(h)), vgimg.UseDPI(dpi))}
	p.Draw(draw.New(c))
	var b bytes.Buffer
	if _, err := c.WriteTo(&b); err != nil {
		return err
	}
	return dataset.WriteFileAtomic(path, b.Bytes())
}

// px is n pixels as a vg length at dpi.
func px(n int) vg.Length { return vg.Length(n) * vg.Inch / dpi }

// newPlot is a plot with the page's text sizes and a light grid.
func newPlot(title, xlabel, ylabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.Title.Padding = vg.Points(8)
	p.X.Label.Text, p.Y.Label.Text = xlabel, ylabel
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font.Size = vg.Points(11)
		a.Tick.Label.Font.Size = vg.Points(10)
	}
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	g := plotter.NewGrid()
	g.Vertical.Color = color.Gray{0xE4}
	g.Horizontal.Color = color.Gray{0xE4}
	p.Add(g)
	return p
}

// bar is one bar of a chart, at category position at, in col.
func bar(v, at float64, col color.Color, width vg.Length, horizontal bool) *plotter.BarChart {
	b, _ := plotter.NewBarChart(plotter.Values{v}, width)
	b.XMin = at
	b.Color = col
	b.LineStyle.Width = 0
	b.Horizontal = horizontal
	return b
}

// labels puts text at points, in the page's label size, centred on the
// point (above it) when centre is set, else to its right.
func labels(xys plotter.XYs, text []string, centre bool, dx, dy vg.Length) *plotter.Labels {
	l, _ := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: text})
	for i := range l.TextStyle {
		l.TextStyle[i].Font.Size = vg.Points(9)
		if centre {
			l.TextStyle[i].XAlign = draw.XCenter
		}
	}
	l.Offset = vg.Point{X: dx, Y: dy}
	return l
}

// Log axes: values are drawn as their log10 on a linear axis (gonum's
// own log scale misplaces the axis label's padding), with ticks at the
// powers of 10 labelled in data units and minor ticks at 2..9 times them.

// lg is log10(v), with v below floor (zero included) drawn at floor.
func lg(v, floor float64) float64 { return math.Log10(math.Max(v, floor)) }

// logAxis makes a show data from lo to hi (data units, > 0) on a log
// scale, whole decades, ticks labelled by format.
func logAxis(a *plot.Axis, lo, hi float64, format func(float64) string) {
	a.Min, a.Max = math.Floor(math.Log10(lo)+1e-9), math.Ceil(math.Log10(hi)-1e-9)
	if a.Max <= a.Min {
		a.Max = a.Min + 1
	}
	a.Tick.Marker = plot.TickerFunc(func(min, max float64) []plot.Tick {
		var ts []plot.Tick
		for e := math.Floor(min); e <= max; e++ {
			ts = append(ts, plot.Tick{Value: e, Label: format(math.Pow(10, e))})
			for m := 2.0; m < 10 && e+math.Log10(m) < max; m++ {
				ts = append(ts, plot.Tick{Value: e + math.Log10(m)})
			}
		}
		return ts
	})
}

// intTicks labels the default tick positions with format (whole numbers
// print without decimals).
func intTicks(format func(float64) string) plot.TickerFunc {
	return func(min, max float64) []plot.Tick {
		ts := plot.DefaultTicks{}.Ticks(min, max)
		for i := range ts {
			if ts[i].Label != "" {
				ts[i].Label = format(ts[i].Value)
			}
		}
		return ts
	}
}

// count formats n briefly: 950, 12k, 3.4M.
func count(n float64) string {
	for _, u := range []struct {
		v float64
		s string
	}{{1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if math.Abs(n) >= u.v {
			return strconv.FormatFloat(sig3(n/u.v), 'f', -1, 64) + u.s
		}
	}
	return strconv.FormatFloat(sig3(n), 'f', -1, 64)
}

func sig3(v float64) float64 {
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 3, 64), 64)
	return r
}

// ---------------------------------------------------------------- similarity

// figSimilarity: the paper's central figure for one eval set, histograms
// of each image's nearest-neighbour similarity to every base on one axis.
func figSimilarity(in *inputs, i int) *plot.Plot {
	es := in.sum.Similarity[i]
	vals := in.sims[es.Eval]
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range vals {
		for _, x := range v {
			lo, hi = math.Min(lo, float64(x)), math.Max(hi, float64(x))
		}
	}
	lo, hi = math.Floor(lo*100)/100, math.Ceil(hi*100)/100
	if hi <= lo {
		lo, hi = lo-0.01, hi+0.01
	}
	const bins = 40
	w := (hi - lo) / bins
	p := newPlot(es.Eval+": similarity of each image to its nearest neighbour",
		"cosine similarity to the nearest neighbour", "fraction of "+es.Eval+" images")
	p.Legend.Top, p.Legend.Left = true, true
	p.Y.Min = 0
	top := 0.0
	for j, s := range es.Series {
		counts := make([]float64, bins)
		for _, x := range vals[j] {
			b := min(bins-1, max(0, int((float64(x)-lo)/w)))
			counts[b]++
		}
		xys := plotter.XYs{{X: lo, Y: 0}}
		for b, c := range counts {
			f := c / float64(len(vals[j]))
			top = math.Max(top, f)
			xys = append(xys, plotter.XY{X: lo + float64(b)*w, Y: f}, plotter.XY{X: lo + float64(b+1)*w, Y: f})
		}
		xys = append(xys, plotter.XY{X: hi, Y: 0})
		l, _ := plotter.NewLine(xys)
		col := in.colours.of(s.Dataset)
		l.Color = col
		l.Width = vg.Points(1.5)
		l.FillColor = translucent(col, 0.3)
		p.Add(l)
		label := s.Dataset + " (base)"
		if s.Role == "reference" {
			label = s.Dataset + " (reference = prune threshold)"
		}
		p.Legend.Add(label+", median "+strconv.FormatFloat(s.Median, 'f', -1, 64), l)
	}
	p.Y.Max = top * (1.12 + 0.1*float64(len(es.Series))) // the legend sits above the bars
	return p
}

// ---------------------------------------------------------------- prune

// figPruned: base points pruned per eval set and combined.
func figPruned(in *inputs) (*plot.Plot, string) {
	pc := in.sum.Prune
	if pc == nil {
		return nil, "no prune outputs"
	}
	p := newPlot(fmt.Sprintf("Pruned from %s (%s points)", pc.Base, count(float64(pc.Rows))), "", "base points pruned")
	var names []string
	var xys plotter.XYs
	var text []string
	for i, s := range pc.Sets {
		p.Add(bar(float64(s.Pruned), float64(i), in.colours.of(s.Eval), vg.Points(40), false))
		names = append(names, s.Eval)
		xys = append(xys, plotter.XY{X: float64(i), Y: float64(s.Pruned)})
		text = append(text, fmt.Sprintf("%s (%.2g%%)", count(float64(s.Pruned)), 100*s.Fraction))
	}
	p.Add(labels(xys, text, true, 0, vg.Points(3)))
	p.NominalX(names...)
	p.Y.Min = 0
	p.Y.Tick.Marker = intTicks(count)
	return p, ""
}

// keptHeight is the kept-sizes figure's height for n rows.
func keptHeight(n int) int { return max(figH, 110+26*n) }

// figKept: the size of every kept id list, on a log axis.
func figKept(in *inputs) (*plot.Plot, string) {
	ks := in.sum.Kept
	if len(ks) == 0 {
		return nil, "no kept id lists"
	}
	p := newPlot("Kept ids per list and subset", "ids kept (log scale)", "")
	lo, hi := math.Inf(1), 1.0
	for _, k := range ks {
		if k.Size > 0 {
			lo = math.Min(lo, float64(k.Size))
		}
		hi = math.Max(hi, float64(k.Size))
	}
	if math.IsInf(lo, 1) {
		lo = 1
	}
	names := make([]string, len(ks))
	var xys plotter.XYs
	var text []string
	for i, k := range ks {
		at := float64(len(ks) - 1 - i) // first row on top
		col := in.colours.of(k.Dataset)
		if strings.HasPrefix(k.Name, "far_") {
			col = light(col, 0.45)
		}
		v := lg(float64(k.Size), lo/10)
		p.Add(bar(v, at, col, vg.Points(14), true))
		names[len(ks)-1-i] = k.Name
		xys = append(xys, plotter.XY{X: v, Y: at})
		text = append(text, strconv.FormatInt(k.Size, 10))
	}
	p.Add(labels(xys, text, false, vg.Points(4), -vg.Points(4)))
	p.NominalY(names...)
	logAxis(&p.X, lo/10, hi*4, count) // a decade below the smallest: every bar shows
	return p, ""
}

// ---------------------------------------------------------------- kmeans

// figKMeansChange: the change ratio per iteration against the stop bound.
func figKMeansChange(in *inputs) (*plot.Plot, string) {
	km := in.sum.KMeans
	if km == nil || len(in.change) == 0 {
		return nil, "no k-means iterations"
	}
	verdict := fmt.Sprintf("not converged after %d iterations", km.Iterations)
	if km.Converged {
		verdict = fmt.Sprintf("converged after %d iterations", km.Iterations)
	}
	p := newPlot(fmt.Sprintf("k-means on %s (k = %d): %s", km.Dataset, km.K, verdict), "iteration",
		"points that changed cluster (fraction)")
	lo, hi := math.Inf(1), 0.0
	for _, c := range in.change {
		if c > 0 {
			lo = math.Min(lo, c)
		}
		hi = math.Max(hi, c)
	}
	if km.Bound > 0 {
		lo = math.Min(lo, km.Bound)
	}
	if math.IsInf(lo, 1) || hi <= 0 {
		lo, hi = 1e-7, 1
	}
	floor := math.Pow(10, math.Floor(math.Log10(lo)+1e-9))
	var xys plotter.XYs
	for i, c := range in.change {
		xys = append(xys, plotter.XY{X: float64(i + 1), Y: lg(c, floor)}) // 0 (no change) sits on the floor
	}
	l, s, _ := plotter.NewLinePoints(xys)
	col := in.colours.of(km.Dataset)
	l.Color, l.Width = col, vg.Points(1.5)
	s.Color, s.Radius = col, vg.Points(2)
	p.Add(l, s)
	p.Legend.Add("change ratio", l, s)
	if km.Bound > 0 {
		b, _ := plotter.NewLine(plotter.XYs{{X: 1, Y: lg(km.Bound, floor)}, {X: math.Max(2, float64(len(in.change))), Y: lg(km.Bound, floor)}})
		b.Color, b.Dashes = grey, []vg.Length{vg.Points(5), vg.Points(3)}
		p.Add(b)
		p.Legend.Add("stop bound (change_lower_bound = "+strconv.FormatFloat(km.Bound, 'g', -1, 64)+")", b)
	}
	p.Legend.Top = true
	logAxis(&p.Y, floor, hi, func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) })
	p.X.Min = 1
	p.X.Tick.Marker = intTicks(count)
	return p, ""
}

// binLabel names a power-of-2 size bin.
func binLabel(lo, hi int64) string {
	f := func(v int64) string {
		if v < 10000 {
			return strconv.FormatInt(v, 10)
		}
		return count(float64(v))
	}
	if lo == hi {
		return f(lo)
	}
	return f(lo) + "-" + f(hi)
}

// figClusterSizes: how many clusters have each (power-of-2) size.
func figClusterSizes(in *inputs) (*plot.Plot, string) {
	cs := in.sum.Clusters
	if cs == nil || len(cs.Bins) == 0 {
		return nil, "no non-empty clusters"
	}
	ds := ""
	if in.cfg.KMeans != nil {
		ds = in.cfg.KMeans.Dataset
	}
	p := newPlot(fmt.Sprintf("k-means cluster sizes (%d clusters, %d empty)", cs.Clusters, cs.Empty),
		"cluster size in points (bins are powers of 2)", "clusters")
	var names []string
	var xys plotter.XYs
	var text []string
	for i, b := range cs.Bins {
		p.Add(bar(float64(b.Clusters), float64(i), in.colours.of(ds), vg.Points(28), false))
		names = append(names, binLabel(b.Min, b.Max))
		if b.Clusters > 0 {
			xys = append(xys, plotter.XY{X: float64(i), Y: float64(b.Clusters)})
			text = append(text, strconv.Itoa(b.Clusters))
		}
	}
	p.Add(labels(xys, text, true, 0, vg.Points(3)))
	p.NominalX(names...)
	p.Y.Min = 0
	p.Y.Tick.Marker = intTicks(count)
	return p, ""
}

// ---------------------------------------------------------------- dedup

// figDedupRemoved: the fraction of each cluster-size bin that dedup removed.
func figDedupRemoved(in *inputs) (*plot.Plot, string) {
	d := in.sum.Dedup
	if d == nil || len(d.Bins) == 0 {
		return nil, "no dedup histogram"
	}
	ds := ""
	if in.cfg.KMeans != nil {
		ds = in.cfg.KMeans.Dataset
	}
	p := newPlot(fmt.Sprintf("Dedup removed %s of %s points (eps = %s)", count(float64(d.Removed)), count(float64(d.Points)),
		strconv.FormatFloat(d.Eps, 'g', -1, 64)), "cluster size in points (bins are powers of 2)", "fraction of the bin's points removed")
	var names []string
	var xys plotter.XYs
	var text []string
	for i, b := range d.Bins {
		p.Add(bar(b.Fraction, float64(i), in.colours.of(ds), vg.Points(28), false))
		names = append(names, binLabel(b.Min, b.Max))
		xys = append(xys, plotter.XY{X: float64(i), Y: b.Fraction})
		text = append(text, fmt.Sprintf("%.2g%%", 100*b.Fraction))
	}
	p.Add(labels(xys, text, true, 0, vg.Points(3)))
	p.NominalX(names...)
	p.Y.Min = 0
	return p, ""
}

// ---------------------------------------------------------------- zeroshot

// figZeroshot: top-1 and top-5 accuracy per eval set.
func figZeroshot(in *inputs) (*plot.Plot, string) {
	zs := in.sum.Zeroshot
	if len(zs) == 0 {
		return nil, "no accuracies"
	}
	p := newPlot("Zero-shot accuracy per eval set", "", "accuracy")
	var names []string
	var xys, xys5 plotter.XYs
	var text, text5 []string
	const w = 26
	for i, z := range zs {
		col := in.colours.of(z.Eval)
		t1 := bar(z.Top1, float64(i), col, vg.Points(w), false)
		t1.Offset = -vg.Points(w / 2)
		t5 := bar(z.Top5, float64(i), light(col, 0.55), vg.Points(w), false)
		t5.Offset = vg.Points(w / 2)
		p.Add(t1, t5)
		names = append(names, z.Eval)
		xys = append(xys, plotter.XY{X: float64(i), Y: z.Top1})
		text = append(text, fmt.Sprintf("%.1f%%", 100*z.Top1))
		xys5 = append(xys5, plotter.XY{X: float64(i), Y: z.Top5})
		text5 = append(text5, fmt.Sprintf("%.1f%%", 100*z.Top5))
	}
	p.Add(labels(xys, text, true, -vg.Points(w/2), vg.Points(3)))
	p.Add(labels(xys5, text5, true, vg.Points(w/2), vg.Points(3)))
	p.NominalX(names...)
	p.Legend.Add("top-1", bar(1, 0, grey, vg.Points(w), false))
	p.Legend.Add("top-5", bar(1, 0, light(grey, 0.55), vg.Points(w), false))
	p.Legend.Top = true
	p.Y.Min, p.Y.Max = 0, 1.15
	p.Y.Tick.Marker = plot.ConstantTicks{{Value: 0, Label: "0"}, {Value: 0.25, Label: "0.25"},
		{Value: 0.5, Label: "0.5"}, {Value: 0.75, Label: "0.75"}, {Value: 1, Label: "1"}}
	return p, ""
}

// ---------------------------------------------------------------- stages

// figStageTimes: wall seconds per stage, per rank where available.
func figStageTimes(in *inputs) (*plot.Plot, string) {
	var rows []StageRow
	for _, s := range in.sum.Stages {
		if s.Status == "done" {
			rows = append(rows, s)
		}
	}
	if len(rows) == 0 {
		return nil, "no stage ran in the last run (all skipped or not built)"
	}
	p := newPlot("Stage wall time (last run)", "seconds", "")
	col := color.NRGBA{0x4C, 0x5B, 0x6E, 0xFF}
	names := make([]string, len(rows))
	var xys, ranks plotter.XYs
	var text []string
	maxSec := 0.0
	for i, s := range rows {
		maxSec = math.Max(maxSec, s.Seconds)
		at := float64(len(rows) - 1 - i)
		p.Add(bar(s.Seconds, at, light(col, 0.35), vg.Points(16), true))
		names[len(rows)-1-i] = s.Stage
		xys = append(xys, plotter.XY{X: s.Seconds, Y: at})
		text = append(text, fmt.Sprintf("%ss, %s items/s", strconv.FormatFloat(s.Seconds, 'f', -1, 64), count(s.Throughput)))
		for _, r := range s.RankSeconds {
			ranks = append(ranks, plotter.XY{X: r, Y: at})
			maxSec = math.Max(maxSec, r)
		}
	}
	p.Add(labels(xys, text, false, vg.Points(4), -vg.Points(4)))
	if len(ranks) > 0 {
		sc, _ := plotter.NewScatter(ranks)
		sc.Color, sc.Radius = color.Black, vg.Points(2.5)
		p.Add(sc)
		p.Legend.Add("one rank", sc)
	}
	p.NominalY(names...)
	p.X.Min = 0
	p.X.Max = maxSec * 1.45 // room for the labels
	return p, ""
}
