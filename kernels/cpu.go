package kernels

// cpuFeat records the instruction-set extensions the assembly kernels use.
// It stays all-false on non-amd64 builds and under -tags noasm, which selects
// the pure-Go paths.
var cpuFeat struct {
	fma, f16c, avx2, avx512 bool
	amx                     bool // AMX-BF16 tiles usable (see amx.go)
}

// CPUFeatures reports which accelerated paths are active, e.g.
// "avx512 f16c" or "generic".
func CPUFeatures() string {
	s := ""
	add := func(ok bool, name string) {
		if ok {
			if s != "" {
				s += " "
			}
			s += name
		}
	}
	add(cpuFeat.avx512, "avx512")
	add(cpuFeat.amx, "amx-bf16")
	add(cpuFeat.avx2, "avx2")
	add(cpuFeat.fma, "fma")
	add(cpuFeat.f16c, "f16c")
	if s == "" {
		s = "generic"
	}
	return s
}
