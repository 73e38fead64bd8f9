// Package masks holds the ImageNet-1k class subsets of the robustness eval
// sets, as data (one NAME.txt per mask: comments, then comma-separated
// class indices): imagenet-r (200), imagenet-a (200) and objectnet (113).
// A zero-shot eval on such a set scores only the mask's rows of the
// 1000-class matrix, and the set's label l means ImageNet class mask[l].
// It imports nothing of hpcrun.
package masks

import (
	"embed"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

//go:embed *.txt
var files embed.FS

// Sizes is how many classes each shipped mask has.
var Sizes = map[string]int{"imagenet-r": 200, "imagenet-a": 200, "objectnet": 113}

// Names lists the shipped masks.
func Names() []string {
	out := make([]string, 0, len(Sizes))
	for n := range Sizes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Get returns a shipped mask's class indices.
func Get(name string) ([]int64, error) {
	b, err := files.ReadFile(name + ".txt")
	if err != nil {
		return nil, fmt.Errorf("unknown class mask %q (shipped: %s; or give a .npy file)", name, strings.Join(Names(), ", "))
	}
	return Parse(string(b))
}

// Parse reads comma- or space-separated integers, skipping # comments.
func Parse(s string) ([]int64, error) {
	var out []int64
	for i, line := range strings.Split(s, "\n") {
		line, _, _ = strings.Cut(line, "#")
		for _, f := range strings.FieldsFunc(line, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\r' }) {
			v, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: %q is not a class index", i+1, f)
			}
			out = append(out, v)
		}
	}
	return out, nil
}
