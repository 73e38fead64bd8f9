package report

// The page as a person sees it: headless Chromium (Debian's chromium,
// installed by `make deps`) opens index.html from the file system, a small
// inline script on the page marks which figures loaded and where they sit
// (read back with --dump-dom), and a screenshot of the whole page must show
// each figure, pixel for pixel, where the page says it is.

import (
	"fmt"
	"image"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// pageWidth fits two figure columns (see the page's CSS).
const pageWidth = 1600

// chromium finds the browser, or skips the test (fails with
// HPCRUN_REQUIRE_REFS=1).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("HPCRUN_REQUIRE_REFS") == "1" {
		t.Fatal("chromium not found and HPCRUN_REQUIRE_REFS=1 (make deps installs it)")
	}
	t.Skip("chromium not found (make deps installs it)")
	return ""
}

// headless runs chromium on page with args, in a profile of its own;
// stdout is returned (go test's -timeout bounds a hung browser).
func headless(t *testing.T, bin, page string, args ...string) []byte {
	t.Helper()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
		"--disable-extensions", "--disable-sync", "--hide-scrollbars", "--force-device-scale-factor=1",
		"--user-data-dir=" + t.TempDir()}
	cmd := exec.Command(bin, append(append(base, args...), "file://"+page)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, lastLines(stderr.String(), 20))
	}
	return out
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

var (
	bodyAttr = regexp.MustCompile(`<body data-figures="(\d+)" data-figures-loaded="(\d+)" data-page-height="(\d+)">`)
	imgTag   = regexp.MustCompile(`<img src="([^"]+)"[^>]*data-natural="(\d+)x(\d+)" data-rect="(-?\d+),(-?\d+),(\d+),(\d+)"`)
)

type shownImage struct {
	file       string
	natW, natH int
	rect       image.Rectangle
}

// TestReportInChromium renders the fixture's report in headless Chromium.
// Set HPCRUN_REPORT_SCREENSHOT=FILE to keep the screenshot.
func TestReportInChromium(t *testing.T) {
	bin := chromium(t)
	f := newFixture(t, t.TempDir())
	// one figure left out, so the page carries a note too
	must(t, os.RemoveAll(filepath.Join(f.work, "zeroshot")))
	sum, err := Build(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Figures) != 8 || len(sum.Missing) != 1 {
		t.Fatalf("%d figures, %d left out", len(sum.Figures), len(sum.Missing))
	}
	page, err := filepath.Abs(filepath.Join(f.work, Dir, "index.html"))
	if err != nil {
		t.Fatal(err)
	}

	// 1. the DOM after load: every figure loaded at its size, and where
	dom := string(headless(t, bin, page, "--virtual-time-budget=10000", fmt.Sprintf("--window-size=%d,1200", pageWidth), "--dump-dom"))
	m := bodyAttr.FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("the page's script did not run (no data-figures on <body>):\n%.2000s", dom)
	}
	total, _ := strconv.Atoi(m[1])
	loaded, _ := strconv.Atoi(m[2])
	height, _ := strconv.Atoi(m[3])
	if total != len(sum.Figures) || loaded != total {
		t.Fatalf("chromium loaded %d of %d images; the report has %d figures", loaded, total, len(sum.Figures))
	}
	if !strings.Contains(dom, "<code>zeroshot</code>: no zeroshot/accuracy.json (zeroshot stage)") {
		t.Error("the page does not say why the zero-shot figure is left out")
	}
	var shown []shownImage
	for _, im := range imgTag.FindAllStringSubmatch(dom, -1) {
		v := make([]int, 6)
		for i := range v {
			v[i], _ = strconv.Atoi(im[i+2])
		}
		shown = append(shown, shownImage{file: im[1], natW: v[0], natH: v[1], rect: image.Rect(v[2], v[3], v[2]+v[4], v[3]+v[5])})
	}
	if len(shown) != len(sum.Figures) {
		t.Fatalf("found %d marked images in the DOM, want %d", len(shown), len(sum.Figures))
	}
	columns := map[int]bool{}
	for i, s := range shown {
		fig := sum.Figures[i]
		if s.file != fig.File || s.natW != fig.Width || s.natH != fig.Height || s.rect.Dx() != fig.Width || s.rect.Dy() != fig.Height {
			t.Fatalf("image %d: %+v, want %s shown at %dx%d", i, s, fig.File, fig.Width, fig.Height)
		}
		columns[s.rect.Min.X] = true
	}
	if len(columns) != 2 {
		t.Errorf("figures sit in %d columns at %d px, want 2", len(columns), pageWidth)
	}

	// 2. a screenshot of the whole page shows each figure where the DOM
	// says, matching its PNG
	shot := filepath.Join(t.TempDir(), "page.png")
	if keep := os.Getenv("HPCRUN_REPORT_SCREENSHOT"); keep != "" {
		shot = keep
	}
	headless(t, bin, page, "--virtual-time-budget=10000", fmt.Sprintf("--window-size=%d,%d", pageWidth, height), "--screenshot="+shot)
	img := decodePNG(t, shot)
	if b := img.Bounds(); b.Dx() != pageWidth || b.Dy() != height {
		t.Fatalf("screenshot is %dx%d, want %dx%d", b.Dx(), b.Dy(), pageWidth, height)
	}
	if ink, colours := inkOf(img, img.Bounds()); ink < 0.05 || colours < 16 {
		t.Fatalf("screenshot looks blank: %.3f non-white, %d colours", ink, colours)
	}
	for i, s := range shown {
		fig := decodePNG(t, filepath.Join(f.work, Dir, sum.Figures[i].File))
		if !s.rect.In(img.Bounds()) {
			t.Errorf("%s at %v is outside the screenshot", s.file, s.rect)
			continue
		}
		ink, _ := inkOf(img, s.rect)
		diff := meanDiff(img, s.rect.Min, fig)
		if ink < 0.02 || diff > 2 {
			t.Errorf("%s at %v: %.3f non-white, mean difference %.2f/255 from the PNG", s.file, s.rect, ink, diff)
		}
	}
	// the page's own text rendered too: the title's row is not blank
	if ink, _ := inkOf(img, image.Rect(0, 0, pageWidth, 60)); ink < 0.005 {
		t.Errorf("the page title is not drawn (%.4f non-white)", ink)
	}
}

// meanDiff is the mean absolute channel difference (0..255) between fig
// and the region of shot starting at at.
func meanDiff(shot image.Image, at image.Point, fig image.Image) float64 {
	b := fig.Bounds()
	var sum, n float64
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r1, g1, b1, _ := shot.At(at.X+x-b.Min.X, at.Y+y-b.Min.Y).RGBA()
			r2, g2, b2, _ := fig.At(x, y).RGBA()
			sum += absDiff(r1, r2) + absDiff(g1, g2) + absDiff(b1, b2)
			n += 3
		}
	}
	return sum / n / 257
}

func absDiff(a, b uint32) float64 {
	if a > b {
		return float64(a - b)
	}
	return float64(b - a)
}
