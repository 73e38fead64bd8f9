//go:build !noasm

package kernels

// cpuid and xgetbv are in cpu_amd64.s.
func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
func xgetbv() (eax, edx uint32)

func init() {
	_, _, c1, _ := cpuid(1, 0)
	osxsave := c1&(1<<27) != 0
	if !osxsave {
		return
	}
	xcr0, _ := xgetbv()
	avxOS := xcr0&0x6 == 0x6
	avx512OS := avxOS && xcr0&0xe0 == 0xe0
	maxLeaf, _, _, _ := cpuid(0, 0)
	var b7, d7 uint32
	if maxLeaf >= 7 {
		_, b7, _, d7 = cpuid(7, 0)
	}
	hasAVX := avxOS && c1&(1<<28) != 0
	cpuFeat.fma = hasAVX && c1&(1<<12) != 0
	cpuFeat.f16c = hasAVX && c1&(1<<29) != 0
	cpuFeat.avx2 = hasAVX && b7&(1<<5) != 0
	// AVX-512 F, DQ, BW, VL all required by our kernels.
	const need = 1<<16 | 1<<17 | 1<<30 | 1<<31
	cpuFeat.avx512 = avx512OS && b7&need == need && cpuFeat.fma && !noAVX512ByEnv()
	// AMX-TILE (EDX bit 24) and AMX-BF16 (bit 22), tile state enabled by
	// the OS (XCR0 bits 17, 18); the process asks for the tile state on
	// first use (amxGranted).
	const amxNeed = 1<<22 | 1<<24
	cpuFeat.amx = cpuFeat.avx512 && d7&amxNeed == amxNeed && xcr0&(3<<17) == 3<<17 && amxAllowedByEnv()
}
