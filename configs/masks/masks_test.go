package masks

import "testing"

func TestShippedMasks(t *testing.T) {
	for name, size := range Sizes {
		m, err := Get(name)
		if err != nil {
			t.Fatal(err)
		}
		if len(m) != size {
			t.Fatalf("%s: %d classes, want %d", name, len(m), size)
		}
		for i, v := range m {
			if v < 0 || v >= 1000 || (i > 0 && v <= m[i-1]) {
				t.Fatalf("%s: entry %d = %d is not a strictly increasing ImageNet-1k index", name, i, v)
			}
		}
	}
	// spot checks against the published lists
	a, _ := Get("imagenet-a")
	r, _ := Get("imagenet-r")
	o, _ := Get("objectnet")
	if a[0] != 6 || a[199] != 988 || r[0] != 1 || r[199] != 988 || o[0] != 409 || o[112] != 999 {
		t.Fatalf("ends: a %d..%d, r %d..%d, o %d..%d", a[0], a[199], r[0], r[199], o[0], o[112])
	}
	if _, err := Get("imagenet-x"); err == nil {
		t.Fatal("unknown mask accepted")
	}
}
