package slurm

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxHostlistHosts caps how many host names one hostlist may expand to. The
// largest Slurm clusters have tens of thousands of nodes; a string such as
// "n[0-999999999]" is a mistake or an attack, and expanding it would exhaust
// memory, so it is an error instead.
const MaxHostlistHosts = 1 << 17

// maxRangeDigits bounds the digits of one number in a range, so that every
// number fits an int64 with room to spare.
const maxRangeDigits = 18

// A hostPattern is one comma-separated item of a hostlist: literal text and
// bracket groups in turn. parts[i] is literal text when groups[i] is nil.
type hostPattern struct {
	parts []patternPart
}

type patternPart struct {
	lit    string      // literal text (when ranges is nil)
	ranges []hostRange // a bracket group: the union of its ranges, in order
}

// hostRange is lo..hi inclusive, printed zero-padded to width digits.
type hostRange struct {
	lo, hi int64
	width  int
}

func (r hostRange) count() int64 { return r.hi - r.lo + 1 }

func (r hostRange) format(n int64) string {
	s := strconv.FormatInt(n, 10)
	if len(s) < r.width {
		s = strings.Repeat("0", r.width-len(s)) + s
	}
	return s
}

// count returns how many hosts p expands to, or MaxHostlistHosts+1 when it
// is more than the cap.
func (p hostPattern) count() int64 {
	n := int64(1)
	for _, part := range p.parts {
		if part.ranges == nil {
			continue
		}
		var g int64
		for _, r := range part.ranges {
			g += r.count()
			if g > MaxHostlistHosts {
				return MaxHostlistHosts + 1
			}
		}
		n *= g
		if n > MaxHostlistHosts {
			return MaxHostlistHosts + 1
		}
	}
	return n
}

// expand appends p's hosts to out; the leftmost bracket group varies slowest,
// as in Slurm ("rack[1-2]-n[1-2]" is rack1-n1, rack1-n2, rack2-n1, rack2-n2).
func (p hostPattern) expand(out []string) []string {
	var rec func(i int, prefix string)
	rec = func(i int, prefix string) {
		if i == len(p.parts) {
			out = append(out, prefix)
			return
		}
		part := p.parts[i]
		if part.ranges == nil {
			rec(i+1, prefix+part.lit)
			return
		}
		for _, r := range part.ranges {
			for n := r.lo; n <= r.hi; n++ {
				rec(i+1, prefix+r.format(n))
			}
		}
	}
	rec(0, "")
	return out
}

func (p hostPattern) first() string {
	var b strings.Builder
	for _, part := range p.parts {
		if part.ranges == nil {
			b.WriteString(part.lit)
		} else {
			r := part.ranges[0]
			b.WriteString(r.format(r.lo))
		}
	}
	return b.String()
}

// HostlistError describes a malformed hostlist.
type HostlistError struct {
	Hostlist string
	Offset   int // byte offset of the problem in Hostlist
	Msg      string
}

func (e *HostlistError) Error() string {
	return fmt.Sprintf("slurm: bad hostlist %q at byte %d: %s", e.Hostlist, e.Offset, e.Msg)
}

func isHostlistSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// parseHostlist splits s into patterns. Separators at the top level are
// commas and white space (as in Slurm); empty items are skipped.
func parseHostlist(s string) ([]hostPattern, error) {
	bad := func(off int, format string, args ...any) error {
		return &HostlistError{Hostlist: s, Offset: off, Msg: fmt.Sprintf(format, args...)}
	}
	var pats []hostPattern
	var cur hostPattern
	var total int64
	lit := -1 // start of the current literal run, -1 when none
	flushLit := func(end int) {
		if lit >= 0 {
			cur.parts = append(cur.parts, patternPart{lit: s[lit:end]})
			lit = -1
		}
	}
	endItem := func(off int) error {
		if len(cur.parts) == 0 {
			return nil
		}
		total += cur.count()
		if total > MaxHostlistHosts {
			return bad(off, "expands to more than %d hosts", MaxHostlistHosts)
		}
		pats = append(pats, cur)
		cur = hostPattern{}
		return nil
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ',' || isHostlistSpace(c):
			flushLit(i)
			if err := endItem(i); err != nil {
				return nil, err
			}
		case c == ']':
			return nil, bad(i, "']' without '['")
		case c == '[':
			flushLit(i)
			end := strings.IndexAny(s[i+1:], "[]")
			if end < 0 || s[i+1+end] == '[' {
				if end >= 0 {
					return nil, bad(i+1+end, "nested '['")
				}
				return nil, bad(i, "'[' without ']'")
			}
			end += i + 1
			ranges, err := parseRanges(s, i+1, end)
			if err != nil {
				return nil, err
			}
			cur.parts = append(cur.parts, patternPart{ranges: ranges})
			i = end
		case c < 0x20 || c == 0x7f:
			return nil, bad(i, "control character %q", c)
		default:
			if lit < 0 {
				lit = i
			}
		}
	}
	flushLit(len(s))
	if err := endItem(len(s)); err != nil {
		return nil, err
	}
	return pats, nil
}

// parseRanges parses the inside of a bracket group, s[start:end]: ranges
// "lo-hi" or single numbers separated by commas, optional white space around
// each.
func parseRanges(s string, start, end int) ([]hostRange, error) {
	bad := func(off int, format string, args ...any) error {
		return &HostlistError{Hostlist: s, Offset: off, Msg: fmt.Sprintf(format, args...)}
	}
	var out []hostRange
	var total int64
	off := start
	for _, tok := range strings.Split(s[start:end], ",") {
		tokOff := off
		off += len(tok) + 1
		t := strings.TrimFunc(tok, func(r rune) bool { return r < 0x80 && isHostlistSpace(byte(r)) })
		if t == "" {
			return nil, bad(tokOff, "empty range in brackets")
		}
		loS, hiS, isRange := strings.Cut(t, "-")
		if !isRange {
			hiS = loS
		}
		lo, err := parseRangeNumber(loS)
		if err != nil {
			return nil, bad(tokOff, "range %q: %v", t, err)
		}
		hi, err := parseRangeNumber(hiS)
		if err != nil {
			return nil, bad(tokOff, "range %q: %v", t, err)
		}
		if hi < lo {
			return nil, bad(tokOff, "reversed range %q", t)
		}
		r := hostRange{lo: lo, hi: hi, width: len(loS)}
		total += r.count()
		if total > MaxHostlistHosts {
			return nil, bad(tokOff, "expands to more than %d hosts", MaxHostlistHosts)
		}
		out = append(out, r)
	}
	return out, nil
}

func parseRangeNumber(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("missing number")
	}
	if len(s) > maxRangeDigits {
		return 0, fmt.Errorf("number %q has more than %d digits", s, maxRangeDigits)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a number", s)
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// ExpandHostlist expands a Slurm hostlist such as "gpu[01-04,07],cpu-a[1-2]"
// into host names, in order, without calling scontrol:
//
//   - items are separated by commas or white space; empty items are skipped;
//   - a bracket group holds numbers and ranges lo-hi separated by commas;
//     each range is zero-padded to the width of its lo ("[08-10]" gives
//     08 09 10, "[8-10]" gives 8 9 10);
//   - one name may hold several bracket groups; the leftmost varies slowest
//     ("rack[1-2]-n[1-2]": rack1-n1 rack1-n2 rack2-n1 rack2-n2).
//
// Unbalanced or nested brackets, empty or reversed ranges, non-digits in
// brackets, control characters and lists of more than MaxHostlistHosts hosts
// are errors (*HostlistError). An empty or blank hostlist gives no hosts and
// no error. Duplicates are kept.
func ExpandHostlist(hostlist string) ([]string, error) {
	pats, err := parseHostlist(hostlist)
	if err != nil {
		return nil, err
	}
	var n int64
	for _, p := range pats {
		n += p.count()
	}
	out := make([]string, 0, n)
	for _, p := range pats {
		out = p.expand(out)
	}
	return out, nil
}

// FirstHost returns the first host of a hostlist (rank 0's node for a
// block-distributed job step) without expanding the rest. The whole list
// is still checked, and an empty list is an error.
func FirstHost(hostlist string) (string, error) {
	pats, err := parseHostlist(hostlist)
	if err != nil {
		return "", err
	}
	if len(pats) == 0 {
		return "", fmt.Errorf("slurm: empty hostlist %q", hostlist)
	}
	return pats[0].first(), nil
}

// CompressHostlist is the inverse of ExpandHostlist: it writes hosts as a
// hostlist, keeping their order. Runs of neighbouring hosts that share a
// prefix and end in consecutive numbers of the same zero-padded width become
// ranges: [gpu01 gpu02 gpu03 gpu07 cpu1] gives "gpu[01-03,07],cpu1". Hosts
// are not sorted or deduplicated, so ExpandHostlist(CompressHostlist(h))
// equals h for any host names ExpandHostlist can produce (non-empty, free
// of commas, brackets, white space and control characters).
func CompressHostlist(hosts []string) string {
	type group struct {
		prefix string
		ranges []hostRange
	}
	var groups []group
	for _, h := range hosts {
		prefix, num, width, ok := splitHostNumber(h)
		if !ok {
			groups = append(groups, group{prefix: h})
			continue
		}
		if len(groups) > 0 {
			g := &groups[len(groups)-1]
			if g.ranges != nil && g.prefix == prefix {
				last := &g.ranges[len(g.ranges)-1]
				if num == last.hi+1 && last.hi < 1<<62 && last.format(num) == h[len(prefix):] {
					last.hi = num
				} else {
					g.ranges = append(g.ranges, hostRange{lo: num, hi: num, width: width})
				}
				continue
			}
		}
		groups = append(groups, group{prefix: prefix, ranges: []hostRange{{lo: num, hi: num, width: width}}})
	}
	var b strings.Builder
	for i, g := range groups {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(g.prefix)
		if g.ranges == nil {
			continue
		}
		if len(g.ranges) == 1 && g.ranges[0].lo == g.ranges[0].hi {
			b.WriteString(g.ranges[0].format(g.ranges[0].lo))
			continue
		}
		b.WriteByte('[')
		for j, r := range g.ranges {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(r.format(r.lo))
			if r.hi != r.lo {
				b.WriteByte('-')
				b.WriteString(r.format(r.hi))
			}
		}
		b.WriteByte(']')
	}
	return b.String()
}

// splitHostNumber splits "gpu007" into "gpu", 7, width 3. ok is false when h
// does not end in digits or the number is too long to handle.
func splitHostNumber(h string) (prefix string, num int64, width int, ok bool) {
	i := len(h)
	for i > 0 && h[i-1] >= '0' && h[i-1] <= '9' {
		i--
	}
	digits := h[i:]
	if digits == "" || len(digits) > maxRangeDigits {
		return "", 0, 0, false
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return "", 0, 0, false
	}
	return h[:i], n, len(digits), true
}
