package slurm

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestExpandHostlist(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  , ,", nil},
		{"node1", []string{"node1"}},
		{"localhost", []string{"localhost"}},
		{"a,b,c", []string{"a", "b", "c"}},
		{" a  b\tc\n", []string{"a", "b", "c"}},
		{"a,,b,", []string{"a", "b"}},
		{"gpu[01-04,07],cpu-a[1-2]", []string{"gpu01", "gpu02", "gpu03", "gpu04", "gpu07", "cpu-a1", "cpu-a2"}},
		{"n[8-10]", []string{"n8", "n9", "n10"}},
		{"n[08-10]", []string{"n08", "n09", "n10"}},
		{"n[098-101]", []string{"n098", "n099", "n100", "n101"}},
		{"n[0-1]", []string{"n0", "n1"}},
		{"n[007]", []string{"n007"}},
		{"n[3,1,2]", []string{"n3", "n1", "n2"}},
		{"n[1-2,2]", []string{"n1", "n2", "n2"}},
		{"n[1, 3]", []string{"n1", "n3"}},
		{"rack[1-2]-node[01-02]", []string{"rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"}},
		{"[1-3]", []string{"1", "2", "3"}},
		{"n[1-2].ib", []string{"n1.ib", "n2.ib"}},
		{"n[1-2]x,m[3]", []string{"n1x", "n2x", "m3"}},
		{"a-[1-2]-b-[3-4]-c", []string{"a-1-b-3-c", "a-1-b-4-c", "a-2-b-3-c", "a-2-b-4-c"}},
		{"node-1.cluster.org", []string{"node-1.cluster.org"}},
	} {
		got, err := ExpandHostlist(tc.in)
		if err != nil {
			t.Errorf("ExpandHostlist(%q): %v", tc.in, err)
			continue
		}
		if len(got) == 0 && len(tc.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ExpandHostlist(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestExpandHostlistErrors(t *testing.T) {
	for _, tc := range []struct {
		in, msg string
	}{
		{"n[1-2", "'[' without ']'"},
		{"n1-2]", "']' without '['"},
		{"n[1-[2]]", "nested '['"},
		{"n[]", "empty range"},
		{"n[1,]", "empty range"},
		{"n[,1]", "empty range"},
		{"n[4-1]", "reversed range"},
		{"n[a-b]", "not a number"},
		{"n[1-2-3]", "not a number"},
		{"n[-2]", "missing number"},
		{"n[2-]", "missing number"},
		{"n[ 1 - 2 ]", "not a number"},
		{"n[+1]", "not a number"},
		{"n[0x1]", "not a number"},
		{"n[1234567890123456789]", "more than 18 digits"},
		{"n[0-999999999]", "more than"},
		{"n[0-99999],m[0-99999]", "more than"},
		{"a[1-1000]b[1-1000]", "more than"},
		{"n\x00", "control character"},
		{"n\x7f", "control character"},
	} {
		got, err := ExpandHostlist(tc.in)
		var he *HostlistError
		if !errors.As(err, &he) {
			t.Errorf("ExpandHostlist(%q) = %d hosts, %v; want a *HostlistError", tc.in, len(got), err)
			continue
		}
		if !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ExpandHostlist(%q) error %q does not mention %q", tc.in, err, tc.msg)
		}
		if he.Offset < 0 || he.Offset > len(tc.in) {
			t.Errorf("ExpandHostlist(%q): offset %d out of range", tc.in, he.Offset)
		}
	}
}

func TestExpandHostlistCap(t *testing.T) {
	hosts, err := ExpandHostlist(fmt.Sprintf("n[1-%d]", MaxHostlistHosts))
	if err != nil || len(hosts) != MaxHostlistHosts {
		t.Fatalf("exactly MaxHostlistHosts: %d hosts, %v", len(hosts), err)
	}
	if _, err := ExpandHostlist(fmt.Sprintf("n[1-%d],x", MaxHostlistHosts)); err == nil {
		t.Fatalf("MaxHostlistHosts+1 hosts: no error")
	}
}

func TestFirstHost(t *testing.T) {
	for in, want := range map[string]string{
		"gpu[01-04,07],cpu-a[1-2]": "gpu01",
		"  b1,a1":                  "b1",
		"rack[3-4]-n[09-12]":       "rack3-n09",
		"n[5,1-2]":                 "n5",
		"n[0-99999]":               "n0",
	} {
		got, err := FirstHost(in)
		if err != nil || got != want {
			t.Errorf("FirstHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", " , ", "n[1-2", "n[0-9999999]"} {
		if got, err := FirstHost(in); err == nil {
			t.Errorf("FirstHost(%q) = %q, want an error", in, got)
		}
	}
}

func TestCompressHostlist(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"n1"}, "n1"},
		{[]string{"gpu01", "gpu02", "gpu03", "gpu04", "gpu07", "cpu-a1", "cpu-a2"}, "gpu[01-04,07],cpu-a[1-2]"},
		{[]string{"n8", "n9", "n10", "n11"}, "n[8-11]"},
		{[]string{"n08", "n09", "n10"}, "n[08-10]"},
		{[]string{"n9", "n010"}, "n[9,010]"},
		{[]string{"n3", "n1", "n2"}, "n[3,1-2]"},
		{[]string{"n1", "n1"}, "n[1,1]"},
		{[]string{"a", "b", "a"}, "a,b,a"},
		{[]string{"rack1-node01", "rack1-node02", "rack2-node01"}, "rack1-node[01-02],rack2-node01"},
		{[]string{"n1", "m1", "n2"}, "n1,m1,n2"},
		{[]string{"1", "2", "3"}, "[1-3]"},
	} {
		got := CompressHostlist(tc.in)
		if got != tc.want {
			t.Errorf("CompressHostlist(%q) = %q, want %q", tc.in, got, tc.want)
		}
		back, err := ExpandHostlist(got)
		if err != nil || (len(tc.in) > 0 && !reflect.DeepEqual(back, tc.in)) {
			t.Errorf("ExpandHostlist(CompressHostlist(%q)) = %q, %v", tc.in, back, err)
		}
	}
}

// FuzzExpandHostlist checks that expansion never panics, respects the cap,
// yields clean host names, agrees with FirstHost, and round-trips through
// CompressHostlist.
func FuzzExpandHostlist(f *testing.F) {
	for _, s := range []string{
		"gpu[01-04,07],cpu-a[1-2]", "rack[1-2]-node[01-02]", "n[8-10]", "a b,c",
		"n[1-2", "n]", "n[4-1]", "n[0-999999999]", "[1-3]", "x[00-01]y[9-11]z",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		hosts, err := ExpandHostlist(s)
		first, ferr := FirstHost(s)
		if err != nil {
			var he *HostlistError
			if !errors.As(err, &he) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			if ferr == nil {
				t.Fatalf("FirstHost(%q) = %q but ExpandHostlist fails: %v", s, first, err)
			}
			return
		}
		if len(hosts) > MaxHostlistHosts {
			t.Fatalf("%d hosts, over the cap", len(hosts))
		}
		if len(hosts) == 0 {
			if ferr == nil {
				t.Fatalf("FirstHost(%q) = %q for an empty list", s, first)
			}
			return
		}
		if ferr != nil || first != hosts[0] {
			t.Fatalf("FirstHost(%q) = %q, %v; want %q", s, first, ferr, hosts[0])
		}
		for _, h := range hosts {
			if h == "" || strings.ContainsAny(h, "[], \t\n\r\v\f") {
				t.Fatalf("bad host %q from %q", h, s)
			}
		}
		c := CompressHostlist(hosts)
		back, err := ExpandHostlist(c)
		if err != nil || !reflect.DeepEqual(back, hosts) {
			t.Fatalf("round trip of %q through %q: %q, %v", s, c, back, err)
		}
	})
}
