// Package report turns an experiment's workdir into the figures
// researchers read its results from, and one static page that shows them:
// workdir/report/index.html and workdir/report/*.png.
//
// It reads the workdir's outputs alone (never the datasets): sims/ and
// prune/ for how similar each eval set is to the base (LAION) and to the
// reference (ImageNet-train) and what pruning removed, kmeans/ and dedup/
// for whether k-means converged and what dedup removed, zeroshot/ for
// accuracies and report.json for stage timings. Every figure is optional:
// an output that is not there leaves its figure out, and the page says why.
//
// The story, in the order Write runs it:
//
//  1. load (load.go): read what is there into a Summary (every number the
//     page shows, rounded as it is shown) and the raw series the figures
//     need (nearest-neighbour similarities, change ratios, cluster sizes);
//  2. figures (figures.go): one function per figure, gonum/plot, PNG at a
//     fixed size, one colour per dataset name across all figures;
//  3. page (html.go): a static index.html (inline CSS, no script but a
//     small inline one that marks each figure as loaded, no network);
//  4. report.json gets the Summary under its "report" key, merged so that
//     every other key is kept; the numbers on the page are all there.
//
// Outputs are written atomically; figures that a previous report wrote and
// this one does not are removed, so the folder matches the page.
package report
