//go:build !noasm

#include "textflag.h"

DATA iota32<>+0(SB)/4, $0
DATA iota32<>+4(SB)/4, $1
DATA iota32<>+8(SB)/4, $2
DATA iota32<>+12(SB)/4, $3
DATA iota32<>+16(SB)/4, $4
DATA iota32<>+20(SB)/4, $5
DATA iota32<>+24(SB)/4, $6
DATA iota32<>+28(SB)/4, $7
DATA iota32<>+32(SB)/4, $8
DATA iota32<>+36(SB)/4, $9
DATA iota32<>+40(SB)/4, $10
DATA iota32<>+44(SB)/4, $11
DATA iota32<>+48(SB)/4, $12
DATA iota32<>+52(SB)/4, $13
DATA iota32<>+56(SB)/4, $14
DATA iota32<>+60(SB)/4, $15
GLOBL iota32<>(SB), RODATA|NOPTR, $64

// func argmax32AVX512(row, bias *float32, n int, vals *[32]float32, idxs *[32]int32)
// n is a positive multiple of 32. Two interleaved lane sets (chunks 2c and
// 2c+1) each keep, per lane, the first maximum of row[j]+bias[j]; the caller
// reduces the 32 lanes (max value, then smallest index).
TEXT ·argmax32AVX512(SB), NOSPLIT, $0-40
	MOVQ row+0(FP), SI
	MOVQ bias+8(FP), DX
	MOVQ n+16(FP), CX
	MOVQ vals+24(FP), R8
	MOVQ idxs+32(FP), R9
	VMOVDQU32 iota32<>(SB), Z1     // indices of chunk 0
	MOVL $16, AX
	VPBROADCASTD AX, Z3
	VPADDD Z3, Z1, Z5              // indices of chunk 1
	MOVL $32, AX
	VPBROADCASTD AX, Z3            // step
	VMOVUPS (SI), Z0               // best values set A
	VMOVUPS 64(SI), Z4             // best values set B
	TESTQ DX, DX
	JZ   nobias0
	VADDPS (DX), Z0, Z0
	VADDPS 64(DX), Z4, Z4
	ADDQ $128, DX
nobias0:
	VMOVDQA32 Z1, Z2               // best idx A
	VMOVDQA32 Z5, Z6               // best idx B
	ADDQ $128, SI
	SUBQ $32, CX
	JZ   done
	TESTQ DX, DX
	JZ   loopnb
loopb:
	VPADDD Z3, Z1, Z1
	VPADDD Z3, Z5, Z5
	VMOVUPS (SI), Z7
	VMOVUPS 64(SI), Z8
	VADDPS (DX), Z7, Z7
	VADDPS 64(DX), Z8, Z8
	VCMPPS $0x1e, Z0, Z7, K1       // K1 = new > best
	VCMPPS $0x1e, Z4, Z8, K2
	VMOVAPS Z7, K1, Z0
	VMOVDQA32 Z1, K1, Z2
	VMOVAPS Z8, K2, Z4
	VMOVDQA32 Z5, K2, Z6
	ADDQ $128, SI
	ADDQ $128, DX
	SUBQ $32, CX
	JNZ  loopb
	JMP  done
loopnb:
	VPADDD Z3, Z1, Z1
	VPADDD Z3, Z5, Z5
	VMOVUPS (SI), Z7
	VMOVUPS 64(SI), Z8
	VCMPPS $0x1e, Z0, Z7, K1
	VCMPPS $0x1e, Z4, Z8, K2
	VMOVAPS Z7, K1, Z0
	VMOVDQA32 Z1, K1, Z2
	VMOVAPS Z8, K2, Z4
	VMOVDQA32 Z5, K2, Z6
	ADDQ $128, SI
	SUBQ $32, CX
	JNZ  loopnb
done:
	VMOVUPS Z0, (R8)
	VMOVUPS Z4, 64(R8)
	VMOVDQU32 Z2, (R9)
	VMOVDQU32 Z6, 64(R9)
	VZEROUPPER
	RET

// func filterGTAVX512(row *float32, n int, thr float32, out *int32) int
// n is a positive multiple of 16.
TEXT ·filterGTAVX512(SB), NOSPLIT, $0-40
	MOVQ row+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS thr+16(FP), Z0
	MOVQ out+24(FP), DI
	MOVQ DI, R8
	VMOVDQU32 iota32<>(SB), Z1
	MOVL $16, AX
	VPBROADCASTD AX, Z3
floop:
	VCMPPS $0x11, (SI), Z0, K1     // K1 = thr < row
	KORTESTW K1, K1
	JZ   fnext
	VPCOMPRESSD Z1, K1, (DI)
	KMOVW K1, AX
	POPCNTL AX, AX
	LEAQ (DI)(AX*4), DI
fnext:
	VPADDD Z3, Z1, Z1
	ADDQ $64, SI
	SUBQ $16, CX
	JNZ  floop
	SUBQ R8, DI
	SHRQ $2, DI
	MOVQ DI, ret+32(FP)
	VZEROUPPER
	RET

// func addFixedAVX512(sum *int64, x *float32, n int)
// n is a positive multiple of 8: sum[k] += RNE(x[k] * 2^32).
TEXT ·addFixedAVX512(SB), NOSPLIT, $0-24
	MOVQ sum+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ n+16(FP), CX
	MOVL $0x4f800000, AX           // 2^32 as float32
	VPBROADCASTD AX, Y0
aloop:
	VMULPS (SI), Y0, Y1
	VCVTPS2QQ Y1, Z2
	VPADDQ (DI), Z2, Z2
	VMOVDQU64 Z2, (DI)
	ADDQ $32, SI
	ADDQ $64, DI
	SUBQ $8, CX
	JNZ  aloop
	VZEROUPPER
	RET

// func packPanelAVX512(dst, src *float32, lda, d int, gm0, gm1 int, w int, neg int) (bad int)
// Packs one micro-panel: dst[k*w+i] = ±src[i*lda+k] for k < d and i < w,
// where lanes outside the gather masks gm0 (rows 0-15) / gm1 (rows 16-31)
// are zero. w is 14 or 32. Returns a non-zero value if a gathered value is
// NaN or ±Inf.
TEXT ·packPanelAVX512(SB), NOSPLIT, $0-72
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ lda+16(FP), R8
	MOVQ d+24(FP), CX
	MOVQ gm0+32(FP), R11
	MOVQ gm1+40(FP), R12
	MOVQ w+48(FP), R10
	MOVQ neg+56(FP), DX
	VPBROADCASTD R8, Z3
	VMOVDQU32 iota32<>(SB), Z1
	VPMULLD Z3, Z1, Z1               // row offsets 0..15
	MOVL $16, AX
	VPBROADCASTD AX, Z4
	VPMULLD Z3, Z4, Z4
	VPADDD Z4, Z1, Z2                // row offsets 16..31
	VPXORD Z5, Z5, Z5
	TESTQ DX, DX
	JZ   pnoneg
	MOVL $0x80000000, AX
	VPBROADCASTD AX, Z5
pnoneg:
	KXORW K4, K4, K4
	MOVL $0x3fff, AX
	KMOVW AX, K2
	CMPQ R10, $14
	JNE  p32
p14:
	KMOVW R11, K1
	VPXORD Z0, Z0, Z0
	VGATHERDPS (SI)(Z1*4), K1, Z0
	VFPCLASSPSZ $0x99, Z0, K3
	KORW K3, K4, K4
	VPXORD Z5, Z0, Z0
	VMOVUPS Z0, K2, (DI)
	ADDQ $4, SI
	ADDQ $56, DI
	DECQ CX
	JNZ  p14
	JMP  pdone
p32:
	KMOVW R11, K1
	VPXORD Z0, Z0, Z0
	VGATHERDPS (SI)(Z1*4), K1, Z0
	KMOVW R12, K1
	VPXORD Z6, Z6, Z6
	VGATHERDPS (SI)(Z2*4), K1, Z6
	VFPCLASSPSZ $0x99, Z0, K3
	KORW K3, K4, K4
	VFPCLASSPSZ $0x99, Z6, K3
	KORW K3, K4, K4
	VPXORD Z5, Z0, Z0
	VPXORD Z5, Z6, Z6
	VMOVUPS Z0, (DI)
	VMOVUPS Z6, 64(DI)
	ADDQ $4, SI
	ADDQ $128, DI
	DECQ CX
	JNZ  p32
pdone:
	KMOVW K4, AX
	MOVQ AX, bad+64(FP)
	VZEROUPPER
	RET
