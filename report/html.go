package report

// The page: static HTML with inline CSS that opens from the file system
// (no server, no network). Every number on it is a field of the Summary,
// which report.json holds under "report", or of report.json's "datasets";
// each sits in an element of class "n".

import (
	"bytes"
	"html/template"
	"math"
	"strconv"
	"strings"
)

// pageData is what the template sees.
type pageData struct {
	*Summary
	Datasets []DatasetRow
}

func renderHTML(sum *Summary, cols *colours) ([]byte, error) {
	t, err := template.New("page").Funcs(template.FuncMap{
		"f":      num,
		"i":      func(v int) string { return num(float64(v)) },
		"i64":    func(v int64) string { return num(float64(v)) },
		"colour": func(name string) template.CSS { return template.CSS(cols.hex(name)) },
		"yesno": func(b bool) string {
			if b {
				return "yes"
			}
			return "no"
		},
	}).Parse(pageTemplate)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, pageData{Summary: sum, Datasets: sum.datasets}); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// num formats a number as the page shows it: integers with thousands
// separators, others in the shortest form that reads back the same value.
func num(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		s := strconv.FormatInt(int64(math.Abs(v)), 10)
		var b strings.Builder
		if v < 0 {
			b.WriteByte('-')
		}
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(c)
		}
		return b.String()
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

const pageTemplate = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>hpcrun report: {{.Job}}</title>
<style>
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; margin: 24px auto; max-width: 1520px;
       padding: 0 16px; color: #222; background: #fff; font-size: 15px; line-height: 1.45; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.lead { color: #555; margin: 0 0 12px; }
.figs { display: grid; grid-template-columns: repeat(auto-fill, minmax(0, 738px)); gap: 18px; }
figure { margin: 0; padding: 8px; border: 1px solid #e3e3e3; border-radius: 4px; background: #fff; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { font-size: 13px; color: #444; margin-top: 6px; max-width: 720px; }
figcaption b { color: #222; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 3px 9px; text-align: left; }
th { background: #f4f4f4; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.sw { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; }
.tables { display: flex; flex-wrap: wrap; gap: 0 32px; align-items: flex-start; }
.tables h3 { font-size: 15px; margin: 10px 0 2px; }
ul.missing li { color: #555; }
code { font-size: 13px; }
</style>
</head>
<body>
<h1>hpcrun report: {{.Job}}</h1>
<p class="lead">The experiment's figures, drawn from the workdir's outputs. Every number on this page is also in
<code>report.json</code> (under <code>report</code>, and <code>datasets</code>); each dataset keeps its colour in every figure.</p>

<h2>Figures</h2>
<div class="figs">
{{range .Figures}}<figure id="fig-{{.Name}}"><img src="{{.File}}" width="{{.Width}}" height="{{.Height}}" alt="{{.Title}}">
<figcaption><b>{{.Title}}.</b> {{.Caption}}</figcaption></figure>
{{end}}</div>
{{if .Missing}}<h2>Left out</h2>
<ul class="missing">
{{range .Missing}}<li><code>{{.Figure}}</code>: {{.Reason}}</li>
{{end}}</ul>{{end}}

<h2>Numbers</h2>
<div class="tables">
{{if .Datasets}}<div><h3>Datasets</h3>
<table><tr><th>dataset</th><th class="n">rows</th><th class="n">dim</th><th>dtype</th></tr>
{{range .Datasets}}<tr><td><span class="sw" style="background:{{colour .Name}}"></span>{{.Name}}</td><td class="n">{{i64 .Rows}}</td><td class="n">{{i .Dim}}</td><td>{{.DType}}</td></tr>
{{end}}</table></div>{{end}}

{{if .Similarity}}<div><h3>Nearest-neighbour similarity</h3>
<table><tr><th>eval set</th><th>to</th><th class="n">images</th><th class="n">mean</th><th class="n">5%</th><th class="n">median</th><th class="n">95%</th></tr>
{{range $e := .Similarity}}{{range .Series}}<tr><td><span class="sw" style="background:{{colour $e.Eval}}"></span>{{$e.Eval}}</td><td><span class="sw" style="background:{{colour .Dataset}}"></span>{{.Dataset}} ({{.Role}})</td><td class="n">{{i $e.Queries}}</td><td class="n">{{f .Mean}}</td><td class="n">{{f .P05}}</td><td class="n">{{f .Median}}</td><td class="n">{{f .P95}}</td></tr>
{{end}}{{end}}</table>
<table><tr><th>eval set</th><th>nearer to the base than to the reference</th><th class="n">images</th><th class="n">fraction</th><th class="n">median threshold</th></tr>
{{range .Similarity}}{{if .Reference}}<tr><td>{{.Eval}}</td><td>{{.Base}} vs {{.Reference}}</td><td class="n">{{i64 .CloserToBase}}</td><td class="n">{{f .CloserFraction}}</td><td class="n">{{f .MedianThreshold}}</td></tr>
{{end}}{{end}}</table></div>{{end}}

{{with .Prune}}<div><h3>Pruned from {{.Base}} (reference {{.Reference}})</h3>
<table><tr><th>eval set</th><th class="n">pruned</th><th class="n">kept</th><th class="n">pruned fraction</th></tr>
{{range .Sets}}<tr><td><span class="sw" style="background:{{colour .Eval}}"></span>{{.Eval}}</td><td class="n">{{i64 .Pruned}}</td><td class="n">{{i64 .Kept}}</td><td class="n">{{f .Fraction}}</td></tr>
{{end}}</table>
{{if .Approx}}<table><tr><th>eval set</th><th class="n">paper's approximate rule: pruned</th><th class="n">exactly-pruned ids it misses</th></tr>
{{range .Approx}}<tr><td>{{.Eval}}</td><td class="n">{{i64 .Pruned}}</td><td class="n">{{i64 .Missed}}</td></tr>
{{end}}</table>{{end}}</div>{{end}}

{{if .Kept}}<div><h3>Kept sizes</h3>
<table><tr><th>list</th><th>file</th><th class="n">ids</th></tr>
{{range .Kept}}<tr><td><span class="sw" style="background:{{colour .Dataset}}"></span>{{.Name}}</td><td><code>{{.File}}</code></td><td class="n">{{i64 .Size}}</td></tr>
{{end}}</table></div>{{end}}

{{with .KMeans}}<div><h3>k-means</h3>
<table>
<tr><th>dataset</th><td>{{.Dataset}}</td></tr>
<tr><th>clusters</th><td class="n">{{i .K}}</td></tr>
<tr><th>points</th><td class="n">{{i64 .Points}}</td></tr>
<tr><th>iterations</th><td class="n">{{i .Iterations}}</td></tr>
<tr><th>converged</th><td>{{yesno .Converged}}</td></tr>
<tr><th>last change ratio</th><td class="n">{{f .FinalChange}}</td></tr>
<tr><th>stop bound</th><td class="n">{{f .Bound}}</td></tr>
<tr><th>empty clusters</th><td class="n">{{i .Empty}}</td></tr>
</table></div>{{end}}

{{with .Clusters}}<div><h3>Cluster sizes</h3>
<table>
<tr><th>clusters</th><td class="n">{{i .Clusters}}</td></tr>
<tr><th>empty</th><td class="n">{{i .Empty}}</td></tr>
{{if .Min}}<tr><th>smallest (non-empty)</th><td class="n">{{i64 .Min}}</td></tr>
<tr><th>median (non-empty)</th><td class="n">{{i64 .Median}}</td></tr>{{end}}
<tr><th>largest</th><td class="n">{{i64 .Max}}</td></tr>
<tr><th>from</th><td><code>{{.Source}}</code></td></tr>
</table></div>{{end}}

{{with .Dedup}}<div><h3>Dedup</h3>
<table>
<tr><th>points</th><td class="n">{{i64 .Points}}</td></tr>
<tr><th>kept</th><td class="n">{{i64 .Kept}}</td></tr>
<tr><th>removed</th><td class="n">{{i64 .Removed}}</td></tr>
<tr><th>removed fraction</th><td class="n">{{f .Fraction}}</td></tr>
<tr><th>eps</th><td class="n">{{f .Eps}}</td></tr>
<tr><th>similarity threshold</th><td class="n">{{f .Threshold}}</td></tr>
</table></div>{{end}}

{{if .Zeroshot}}<div><h3>Zero-shot accuracy</h3>
<table><tr><th>eval set</th><th class="n">top-1</th><th class="n">top-5</th><th class="n">images</th></tr>
{{range .Zeroshot}}<tr><td><span class="sw" style="background:{{colour .Eval}}"></span>{{.Eval}}</td><td class="n">{{f .Top1}}</td><td class="n">{{f .Top5}}</td><td class="n">{{i64 .N}}</td></tr>
{{end}}</table></div>{{end}}

{{if .Stages}}<div><h3>Stages (last run)</h3>
<table><tr><th>stage</th><th>status</th><th class="n">seconds</th><th class="n">items</th><th class="n">items/s</th><th class="n">ranks</th><th>seconds per rank</th></tr>
{{range .Stages}}<tr><td>{{.Stage}}</td><td>{{.Status}}</td><td class="n">{{f .Seconds}}</td><td class="n">{{i64 .Items}}</td><td class="n">{{f .Throughput}}</td><td class="n">{{i .Ranks}}</td><td>{{range $j, $s := .RankSeconds}}{{if $j}} {{end}}<span class="n">{{f $s}}</span>{{end}}</td></tr>
{{end}}</table></div>{{end}}
</div>

<script>
// Marks each figure as loaded (naturalWidth > 0) and where it sits, for
// tests that render the page headless; shows nothing.
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    var im = imgs[i], r = im.getBoundingClientRect();
    if (im.complete && im.naturalWidth > 0) { ok++; }
    im.setAttribute("data-natural", im.naturalWidth + "x" + im.naturalHeight);
    im.setAttribute("data-rect", [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height].map(Math.round).join(","));
  }
  document.body.setAttribute("data-figures", String(imgs.length));
  document.body.setAttribute("data-figures-loaded", String(ok));
  document.body.setAttribute("data-page-height", String(document.documentElement.scrollHeight));
});
</script>
</body>
</html>
`
