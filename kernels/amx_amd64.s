//go:build !noasm

#include "textflag.h"

DATA amxiota<>+0(SB)/4, $0
DATA amxiota<>+4(SB)/4, $1
DATA amxiota<>+8(SB)/4, $2
DATA amxiota<>+12(SB)/4, $3
DATA amxiota<>+16(SB)/4, $4
DATA amxiota<>+20(SB)/4, $5
DATA amxiota<>+24(SB)/4, $6
DATA amxiota<>+28(SB)/4, $7
DATA amxiota<>+32(SB)/4, $8
DATA amxiota<>+36(SB)/4, $9
DATA amxiota<>+40(SB)/4, $10
DATA amxiota<>+44(SB)/4, $11
DATA amxiota<>+48(SB)/4, $12
DATA amxiota<>+52(SB)/4, $13
DATA amxiota<>+56(SB)/4, $14
DATA amxiota<>+60(SB)/4, $15
GLOBL amxiota<>(SB), RODATA|NOPTR, $64

// AMX-BF16 filter kernels (see amx.go). The Go assembler knows no AMX
// instructions, so they are emitted as bytes; the encodings (VEX, checked
// with objdump) are:
//
//	LDTILECFG (AX)                  C4 E2 78 49 00
//	TILERELEASE                     C4 E2 78 49 C0
//	TILEZERO tmm0..3                C4 E2 7B 49 C0/C8/D0/D8
//	TILELOADD tmm4, (CX)(R9*1)      C4 A2 7B 4B 24 09
//	TILELOADD tmm5, 1024(CX)(R9*1)  C4 A2 7B 4B AC 09 00 04 00 00
//	TILELOADD tmm6, (AX)(R9*1)      C4 A2 7B 4B 34 08
//	TILELOADD tmm7, 1024(AX)(R9*1)  C4 A2 7B 4B BC 08 00 04 00 00
//	TDPBF16PS tmm0, tmm4, tmm6      C4 E2 4A 5C C4   (tmm0 += tmm4 · tmm6)
//	TDPBF16PS tmm1, tmm4, tmm7      C4 E2 42 5C CC
//	TDPBF16PS tmm2, tmm5, tmm6      C4 E2 4A 5C D5
//	TDPBF16PS tmm3, tmm5, tmm7      C4 E2 42 5C DD
//	TILESTORED (DI)(R10*1), tmm0    C4 A2 7A 4B 04 17
//	TILESTORED 64(DI)(R10*1), tmm1  C4 A2 7A 4B 4C 17 40
//	TILESTORED (CX)(R10*1), tmm2    C4 A2 7A 4B 14 11
//	TILESTORED 64(CX)(R10*1), tmm3  C4 A2 7A 4B 5C 11 40

#define LDTILECFG_AX BYTE $0xc4; BYTE $0xe2; BYTE $0x78; BYTE $0x49; BYTE $0x00
#define TILERELEASE BYTE $0xc4; BYTE $0xe2; BYTE $0x78; BYTE $0x49; BYTE $0xc0
#define TILEZERO0 BYTE $0xc4; BYTE $0xe2; BYTE $0x7b; BYTE $0x49; BYTE $0xc0
#define TILEZERO1 BYTE $0xc4; BYTE $0xe2; BYTE $0x7b; BYTE $0x49; BYTE $0xc8
#define TILEZERO2 BYTE $0xc4; BYTE $0xe2; BYTE $0x7b; BYTE $0x49; BYTE $0xd0
#define TILEZERO3 BYTE $0xc4; BYTE $0xe2; BYTE $0x7b; BYTE $0x49; BYTE $0xd8
#define LOAD_T4_CX BYTE $0xc4; BYTE $0xa2; BYTE $0x7b; BYTE $0x4b; BYTE $0x24; BYTE $0x09
#define LOAD_T5_CX1K BYTE $0xc4; BYTE $0xa2; BYTE $0x7b; BYTE $0x4b; BYTE $0xac; BYTE $0x09; BYTE $0x00; BYTE $0x04; BYTE $0x00; BYTE $0x00
#define LOAD_T6_AX BYTE $0xc4; BYTE $0xa2; BYTE $0x7b; BYTE $0x4b; BYTE $0x34; BYTE $0x08
#define LOAD_T7_AX1K BYTE $0xc4; BYTE $0xa2; BYTE $0x7b; BYTE $0x4b; BYTE $0xbc; BYTE $0x08; BYTE $0x00; BYTE $0x04; BYTE $0x00; BYTE $0x00
#define TDP_0_4_6 BYTE $0xc4; BYTE $0xe2; BYTE $0x4a; BYTE $0x5c; BYTE $0xc4
#define TDP_1_4_7 BYTE $0xc4; BYTE $0xe2; BYTE $0x42; BYTE $0x5c; BYTE $0xcc
#define TDP_2_5_6 BYTE $0xc4; BYTE $0xe2; BYTE $0x4a; BYTE $0x5c; BYTE $0xd5
#define TDP_3_5_7 BYTE $0xc4; BYTE $0xe2; BYTE $0x42; BYTE $0x5c; BYTE $0xdd
#define STORE_T0_DI BYTE $0xc4; BYTE $0xa2; BYTE $0x7a; BYTE $0x4b; BYTE $0x04; BYTE $0x17
#define STORE_T1_DI64 BYTE $0xc4; BYTE $0xa2; BYTE $0x7a; BYTE $0x4b; BYTE $0x4c; BYTE $0x17; BYTE $0x40
#define STORE_T2_CX BYTE $0xc4; BYTE $0xa2; BYTE $0x7a; BYTE $0x4b; BYTE $0x14; BYTE $0x11
#define STORE_T3_CX64 BYTE $0xc4; BYTE $0xa2; BYTE $0x7a; BYTE $0x4b; BYTE $0x5c; BYTE $0x11; BYTE $0x40

// func amxTile(cfg *[64]byte, a *uint16, b *uint16, c *float32, ldc int, mb, np, ks int)
//
// kern4: C[32·mb x 32·np] = A · Bᵀ approximately (bf16 products, float32
// accumulation). a: tiled bf16 (see bfRows): per 32-row block q and k step
// s a 2 KiB block of two 16x32 tiles (rows 0-15, 16-31), 64 bytes per
// row. b: VNNI-packed (see vnniPack): per 32-column pair p and k step s a
// 2 KiB block of two 16x16-dword tiles. c: row-major float32, ldc bytes
// per row. 2x2 tiles of C (tmm0-3) per 32x32 block, A in tmm4-5, B in
// tmm6-7; p outer (the B pair, ks·2 KiB, stays in L1), row blocks inner.
// Every tile load reads 1 KiB of contiguous memory.
TEXT ·amxTile(SB), NOSPLIT, $16-64
	MOVQ cfg+0(FP), AX
	LDTILECFG_AX
	MOVQ $64, R9
	MOVQ ldc+32(FP), R10
	MOVQ b+16(FP), BX
	MOVQ c+24(FP), DI
	MOVQ np+48(FP), AX
	MOVQ AX, 0(SP)
amx_p:
	MOVQ DI, 8(SP)
	MOVQ a+8(FP), CX
	MOVQ mb+40(FP), R11
amx_q:
	TILEZERO0
	TILEZERO1
	TILEZERO2
	TILEZERO3
	MOVQ BX, AX
	MOVQ ks+56(FP), R13
amx_k:
	LOAD_T4_CX
	LOAD_T5_CX1K
	LOAD_T6_AX
	LOAD_T7_AX1K
	TDP_0_4_6
	TDP_1_4_7
	TDP_2_5_6
	TDP_3_5_7
	ADDQ $2048, CX
	ADDQ $2048, AX
	DECQ R13
	JNZ  amx_k
	STORE_T0_DI
	STORE_T1_DI64
	MOVQ R10, DX
	SHLQ $4, DX
	ADDQ DI, DX
	XCHGQ CX, DX
	STORE_T2_CX
	STORE_T3_CX64
	XCHGQ CX, DX
	MOVQ R10, DX
	SHLQ $5, DX
	ADDQ DX, DI
	DECQ R11
	JNZ  amx_q
	MOVQ ks+56(FP), DX
	SHLQ $11, DX
	ADDQ DX, BX
	MOVQ 8(SP), DI
	ADDQ $128, DI
	DECQ 0(SP)
	JNZ  amx_p
	TILERELEASE
	RET

// func bf16Row(dst *uint16, src *float32, n, npad int, neg int, sums *[48]float32, cstride int)
//
// Converts n floats (negated when neg != 0) to bf16 (round to nearest
// even; results that would be bf16 subnormals are flushed to zero, as AMX
// reads them), writes npad >= n values (zeros past n; npad a multiple of
// 32) in 32-value chunks cstride bytes apart, and accumulates per lane Σx²
// (sums[0:16]), Σx̃² (sums[16:32]) and Σ(x-x̃)² (sums[32:48]) of this row
// (sums are overwritten).
TEXT ·bf16Row(SB), NOSPLIT, $0-56
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVQ npad+24(FP), DX
	MOVQ neg+32(FP), R9
	MOVQ sums+40(FP), R8
	MOVQ cstride+48(FP), R11
	SUBQ $32, R11                    // from the second half of a chunk to the next chunk
	XORQ R10, R10                    // which half of the chunk is next
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z24, Z24, Z24
	TESTQ R9, R9
	JZ   bf_noneg
	MOVL $0x80000000, AX
	VPBROADCASTD AX, Z24
bf_noneg:
	MOVL $0x7fff, AX
	VPBROADCASTD AX, Z20
	MOVL $1, AX
	VPBROADCASTD AX, Z21
	MOVL $0xffff0000, AX
	VPBROADCASTD AX, Z22
	MOVL $0x7f800000, AX
	VPBROADCASTD AX, Z23
bf_loop:
	CMPQ CX, $16
	JLT  bf_tail
	VMOVUPS (SI), Z0
	ADDQ $64, SI
	SUBQ $16, CX
	JMP  bf_conv
bf_tail:
	TESTQ CX, CX
	JZ   bf_pad
	MOVL $1, AX
	SHLL CX, AX
	DECL AX
	KMOVW AX, K1
	VMOVUPS.Z (SI), K1, Z0
	XORQ CX, CX
bf_conv:
	VPXORD Z24, Z0, Z0
	VPSRLD $16, Z0, Z1
	VPANDD Z21, Z1, Z1
	VPADDD Z20, Z1, Z1
	VPADDD Z0, Z1, Z1
	VPANDD Z22, Z1, Z1
	VPTESTMD Z23, Z1, K2
	VMOVDQA32.Z Z1, K2, Z1
	VSUBPS Z1, Z0, Z2
	VFMADD231PS Z0, Z0, Z10
	VFMADD231PS Z1, Z1, Z11
	VFMADD231PS Z2, Z2, Z12
	VPSRLD $16, Z1, Z1
	VPMOVDW Z1, Y3
	VMOVDQU Y3, (DI)
	XORQ $1, R10
	JZ   bf_c1
	ADDQ $32, DI
	JMP  bf_c2
bf_c1:
	ADDQ R11, DI
bf_c2:
	SUBQ $16, DX
	JMP  bf_loop
bf_pad:
	VPXORD Y3, Y3, Y3
bf_padloop:
	CMPQ DX, $0
	JLE  bf_done
	VMOVDQU Y3, (DI)
	XORQ $1, R10
	JZ   bf_p1
	ADDQ $32, DI
	JMP  bf_p2
bf_p1:
	ADDQ R11, DI
bf_p2:
	SUBQ $16, DX
	JMP  bf_padloop
bf_done:
	VMOVUPS Z10, (R8)
	VMOVUPS Z11, 64(R8)
	VMOVUPS Z12, 128(R8)
	VZEROUPPER
	RET

// func vnniPack(dst, src *uint16, ld int, np, ks int)
//
// Packs 32·np rows of row-major bf16 (ld bytes per row, 32·ks columns) for
// amxTile: for pair p, k step s, half h, tile row r, column n:
//
//	dst dword [((p·ks + s)·2 + h)·256 + r·16 + n] = src dword at row p·32+h·16+n, byte offset s·64 + 4r
TEXT ·vnniPack(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ ld+16(FP), R8
	MOVQ np+24(FP), R9
	MOVQ ks+32(FP), R10
	VPBROADCASTD R8, Z2
	VMOVDQU32 amxiota<>(SB), Z1
	VPMULLD Z2, Z1, Z1               // n·ld
	MOVQ R8, R12
	SHLQ $4, R12                     // 16 rows
vn_p:
	MOVQ SI, BX                      // rows p·32
	MOVQ R10, R11
vn_s:
	MOVQ BX, AX
	MOVQ $2, CX
vn_h:
	KXNORW K1, K1, K1
	VPGATHERDD 0(AX)(Z1*1), K1, Z0
	KXNORW K1, K1, K1
	VPGATHERDD 4(AX)(Z1*1), K1, Z3
	KXNORW K1, K1, K1
	VPGATHERDD 8(AX)(Z1*1), K1, Z4
	KXNORW K1, K1, K1
	VPGATHERDD 12(AX)(Z1*1), K1, Z5
	VMOVDQU32 Z0, (DI)
	VMOVDQU32 Z3, 64(DI)
	VMOVDQU32 Z4, 128(DI)
	VMOVDQU32 Z5, 192(DI)
	KXNORW K1, K1, K1
	VPGATHERDD 16(AX)(Z1*1), K1, Z0
	KXNORW K1, K1, K1
	VPGATHERDD 20(AX)(Z1*1), K1, Z3
	KXNORW K1, K1, K1
	VPGATHERDD 24(AX)(Z1*1), K1, Z4
	KXNORW K1, K1, K1
	VPGATHERDD 28(AX)(Z1*1), K1, Z5
	VMOVDQU32 Z0, 256(DI)
	VMOVDQU32 Z3, 320(DI)
	VMOVDQU32 Z4, 384(DI)
	VMOVDQU32 Z5, 448(DI)
	KXNORW K1, K1, K1
	VPGATHERDD 32(AX)(Z1*1), K1, Z0
	KXNORW K1, K1, K1
	VPGATHERDD 36(AX)(Z1*1), K1, Z3
	KXNORW K1, K1, K1
	VPGATHERDD 40(AX)(Z1*1), K1, Z4
	KXNORW K1, K1, K1
	VPGATHERDD 44(AX)(Z1*1), K1, Z5
	VMOVDQU32 Z0, 512(DI)
	VMOVDQU32 Z3, 576(DI)
	VMOVDQU32 Z4, 640(DI)
	VMOVDQU32 Z5, 704(DI)
	KXNORW K1, K1, K1
	VPGATHERDD 48(AX)(Z1*1), K1, Z0
	KXNORW K1, K1, K1
	VPGATHERDD 52(AX)(Z1*1), K1, Z3
	KXNORW K1, K1, K1
	VPGATHERDD 56(AX)(Z1*1), K1, Z4
	KXNORW K1, K1, K1
	VPGATHERDD 60(AX)(Z1*1), K1, Z5
	VMOVDQU32 Z0, 768(DI)
	VMOVDQU32 Z3, 832(DI)
	VMOVDQU32 Z4, 896(DI)
	VMOVDQU32 Z5, 960(DI)
	ADDQ $1024, DI
	ADDQ R12, AX                     // next 16 rows
	DECQ CX
	JNZ  vn_h
	ADDQ $64, BX                     // next k step
	DECQ R11
	JNZ  vn_s
	MOVQ R12, AX
	SHLQ $1, AX
	ADDQ AX, SI                      // next 32 rows
	DECQ R9
	JNZ  vn_p
	VZEROUPPER
	RET

// func dotGather(a *float32, offa *int32, sa int, b *float32, offb *int32, sb int, n, d int, out *float32)
//
// Exact rescoring: for l < n (n a positive multiple of 16),
//
//	s := 0; for k < d { s = fma(a[offa[l]+k·sa], b[offb[l]+k·sb], s) }; out[l] = s
//
// one float32 FMA chain in k order per lane: the value the micro-kernels
// compute for the same pair.
TEXT ·dotGather(SB), NOSPLIT, $0-72
	MOVQ offa+8(FP), R8
	MOVQ offb+32(FP), R9
	MOVQ n+48(FP), R10
	MOVQ out+64(FP), DI
	MOVQ sa+16(FP), R11
	SHLQ $2, R11
	MOVQ sb+40(FP), R12
	SHLQ $2, R12
dg_batch:
	VMOVDQU32 (R8), Z1
	VMOVDQU32 (R9), Z3
	MOVQ a+0(FP), AX
	MOVQ b+24(FP), BX
	MOVQ d+56(FP), CX
	VPXORD Z0, Z0, Z0
	TESTQ CX, CX
	JZ   dg_store
dg_k:
	KXNORW K1, K1, K1
	VGATHERDPS (AX)(Z1*4), K1, Z2
	KXNORW K2, K2, K2
	VGATHERDPS (BX)(Z3*4), K2, Z4
	VFMADD231PS Z4, Z2, Z0
	ADDQ R11, AX
	ADDQ R12, BX
	DECQ CX
	JNZ  dg_k
dg_store:
	VMOVUPS Z0, (DI)
	ADDQ $64, R8
	ADDQ $64, R9
	ADDQ $64, DI
	SUBQ $16, R10
	JNZ  dg_batch
	VZEROUPPER
	RET

// func filterTile(c *float32, ldc, rows, n int, bias, thr *float32, out *int32, max int) int
//
// For every row i < rows and column j < n (n >= 1; rows are read up to the
// next multiple of 16 columns, as is bias) with c[i·ldc+j] + bias[j] >
// thr[i] (float32 add; bias may be nil), appends i<<16 | j to out, in
// row-major order; stops and returns max+1 once more than max pairs are
// found. ldc is in floats. out must hold max+16 entries.
TEXT ·filterTile(SB), NOSPLIT, $0-72
	MOVQ c+0(FP), SI
	MOVQ ldc+8(FP), R8
	SHLQ $2, R8
	MOVQ rows+16(FP), R9
	MOVQ thr+40(FP), R10
	MOVQ out+48(FP), DI
	MOVQ DI, R11
	MOVQ max+56(FP), R12
	SHLQ $2, R12
	ADDQ DI, R12                     // out + max
	VMOVDQU32 amxiota<>(SB), Z5
	MOVL $16, AX
	VPBROADCASTD AX, Z6
	MOVL $0x10000, AX
	VPBROADCASTD AX, Z7
	VPXORD Z8, Z8, Z8                // row<<16
ft_row:
	VBROADCASTSS (R10), Z0
	VPADDD Z8, Z5, Z1                // (row<<16) | j for j = 0..15
	MOVQ SI, BX
	MOVQ bias+32(FP), DX
	MOVQ n+24(FP), CX
ft_col:
	VMOVUPS (BX), Z2
	TESTQ DX, DX
	JZ   ft_nobias
	VADDPS (DX), Z2, Z2
	ADDQ $64, DX
ft_nobias:
	VCMPPS $0x11, Z2, Z0, K1         // thr < c + bias
	CMPQ CX, $16
	JGE  ft_whole
	MOVL $1, AX
	SHLL CX, AX
	DECL AX
	KMOVW AX, K2
	KANDW K2, K1, K1
ft_whole:
	KORTESTW K1, K1
	JZ   ft_next
	VPCOMPRESSD Z1, K1, (DI)
	KMOVW K1, AX
	POPCNTL AX, AX
	LEAQ (DI)(AX*4), DI
	CMPQ DI, R12
	JA   ft_full
ft_next:
	VPADDD Z6, Z1, Z1
	ADDQ $64, BX
	SUBQ $16, CX
	JG   ft_col
	ADDQ R8, SI
	ADDQ $4, R10
	VPADDD Z7, Z8, Z8
	DECQ R9
	JNZ  ft_row
	SUBQ R11, DI
	SHRQ $2, DI
	MOVQ DI, ret+64(FP)
	VZEROUPPER
	RET
ft_full:
	MOVQ max+56(FP), AX
	INCQ AX
	MOVQ AX, ret+64(FP)
	VZEROUPPER
	RET

// func maxTile(c *float32, ldc, rows, n int, bias *float32, out *float32)
//
// out[i] = max over j < n of c[i·ldc+j] + bias[j] (float32 add; bias may
// be nil) for i < rows; n >= 1, rows are read up to the next multiple of
// 16 columns, as is bias.
TEXT ·maxTile(SB), NOSPLIT, $0-48
	MOVQ c+0(FP), SI
	MOVQ ldc+8(FP), R8
	SHLQ $2, R8
	MOVQ rows+16(FP), R9
	MOVQ out+40(FP), DI
	MOVL $0xff800000, AX
	VPBROADCASTD AX, Z9              // -Inf
mt_row:
	VMOVAPS Z9, Z0
	MOVQ SI, BX
	MOVQ bias+32(FP), DX
	MOVQ n+24(FP), CX
mt_col:
	VMOVUPS (BX), Z2
	TESTQ DX, DX
	JZ   mt_nobias
	VADDPS (DX), Z2, Z2
	ADDQ $64, DX
mt_nobias:
	CMPQ CX, $16
	JGE  mt_whole
	MOVL $1, AX
	SHLL CX, AX
	DECL AX
	KMOVW AX, K2
	VMAXPS Z2, Z0, K2, Z0
	JMP  mt_next
mt_whole:
	VMAXPS Z2, Z0, Z0
mt_next:
	ADDQ $64, BX
	SUBQ $16, CX
	JG   mt_col
	VEXTRACTF64X4 $1, Z0, Y1
	VMAXPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0x4e, X0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VMAXPS X1, X0, X0
	VMOVSS X0, (DI)
	ADDQ $4, DI
	ADDQ R8, SI
	DECQ R9
	JNZ  mt_row
	VZEROUPPER
	RET

// func dotGather1(a *float32, sa int, b *float32, offb *int32, sb int, n, d int, out *float32, pf *int32)
//
// dotGather with one A row for all lanes: for l < n (a positive multiple
// of 16), s := 0; for k < d { s = fma(a[k·sa], b[offb[l]+k·sb], s) };
// out[l] = s. When pf is not nil, the 16 B rows at offsets pf[0..15]
// (row-major, sb = 1: the next batch) are prefetched along the way, one
// 64-byte line per row every 16 k.
TEXT ·dotGather1(SB), NOSPLIT, $0-72
	MOVQ sa+8(FP), R11
	SHLQ $2, R11
	MOVQ offb+24(FP), R9
	MOVQ sb+32(FP), R12
	SHLQ $2, R12
	MOVQ n+40(FP), R10
	MOVQ out+56(FP), DI
	MOVQ pf+64(FP), R13
dg1_batch:
	VMOVDQU32 (R9), Z3
	MOVQ a+0(FP), AX
	MOVQ b+16(FP), BX
	MOVQ d+48(FP), CX
	VPXORD Z0, Z0, Z0
	TESTQ CX, CX
	JZ   dg1_store
	TESTQ R13, R13
	JZ   dg1_k
	CMPQ R10, $16
	JNE  dg1_k                       // prefetch only before the last batch
dg1_pf:
	CMPQ CX, $16
	JLT  dg1_k
	MOVLQSX 0(R13), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 4(R13), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 8(R13), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 12(R13), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 16(R13), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 20(R13), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 24(R13), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 28(R13), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 32(R13), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 36(R13), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 40(R13), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 44(R13), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 48(R13), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 52(R13), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 56(R13), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 60(R13), DX
	PREFETCHT0 (BX)(DX*4)
	MOVQ $16, SI
dg1_pk:
	KXNORW K2, K2, K2
	VGATHERDPS (BX)(Z3*4), K2, Z4
	VFMADD231PS.BCST (AX), Z4, Z0
	ADDQ R11, AX
	ADDQ R12, BX
	DECQ CX
	DECQ SI
	JNZ  dg1_pk
	JMP  dg1_pf
dg1_k:
	TESTQ CX, CX
	JZ   dg1_store
	KXNORW K2, K2, K2
	VGATHERDPS (BX)(Z3*4), K2, Z4
	VFMADD231PS.BCST (AX), Z4, Z0
	ADDQ R11, AX
	ADDQ R12, BX
	DECQ CX
	JMP  dg1_k
dg1_store:
	VMOVUPS Z0, (DI)
	ADDQ $64, R9
	ADDQ $64, DI
	SUBQ $16, R10
	JNZ  dg1_batch
	VZEROUPPER
	RET

// TRANSPOSE16 transposes the 16x16 float32 matrix in Z0..Z15 (row r in
// Zr) so that Zk holds element k of every row (lane r = row r); it uses
// (clobbers) Z16..Z31. 64 shuffles: unpack 32-bit, unpack 64-bit, then two
// rounds of 128-bit lane shuffles.
#define TRANSPOSE16 \
	VUNPCKLPS Z1, Z0, Z16; \
	VUNPCKHPS Z1, Z0, Z17; \
	VUNPCKLPS Z3, Z2, Z18; \
	VUNPCKHPS Z3, Z2, Z19; \
	VUNPCKLPS Z5, Z4, Z20; \
	VUNPCKHPS Z5, Z4, Z21; \
	VUNPCKLPS Z7, Z6, Z22; \
	VUNPCKHPS Z7, Z6, Z23; \
	VUNPCKLPS Z9, Z8, Z24; \
	VUNPCKHPS Z9, Z8, Z25; \
	VUNPCKLPS Z11, Z10, Z26; \
	VUNPCKHPS Z11, Z10, Z27; \
	VUNPCKLPS Z13, Z12, Z28; \
	VUNPCKHPS Z13, Z12, Z29; \
	VUNPCKLPS Z15, Z14, Z30; \
	VUNPCKHPS Z15, Z14, Z31; \
	VUNPCKLPD Z18, Z16, Z0; \
	VUNPCKHPD Z18, Z16, Z1; \
	VUNPCKLPD Z19, Z17, Z2; \
	VUNPCKHPD Z19, Z17, Z3; \
	VUNPCKLPD Z22, Z20, Z4; \
	VUNPCKHPD Z22, Z20, Z5; \
	VUNPCKLPD Z23, Z21, Z6; \
	VUNPCKHPD Z23, Z21, Z7; \
	VUNPCKLPD Z26, Z24, Z8; \
	VUNPCKHPD Z26, Z24, Z9; \
	VUNPCKLPD Z27, Z25, Z10; \
	VUNPCKHPD Z27, Z25, Z11; \
	VUNPCKLPD Z30, Z28, Z12; \
	VUNPCKHPD Z30, Z28, Z13; \
	VUNPCKLPD Z31, Z29, Z14; \
	VUNPCKHPD Z31, Z29, Z15; \
	VSHUFF32X4 $0x88, Z4, Z0, Z16; \
	VSHUFF32X4 $0xdd, Z4, Z0, Z17; \
	VSHUFF32X4 $0x88, Z12, Z8, Z24; \
	VSHUFF32X4 $0xdd, Z12, Z8, Z25; \
	VSHUFF32X4 $0x88, Z5, Z1, Z18; \
	VSHUFF32X4 $0xdd, Z5, Z1, Z19; \
	VSHUFF32X4 $0x88, Z13, Z9, Z26; \
	VSHUFF32X4 $0xdd, Z13, Z9, Z27; \
	VSHUFF32X4 $0x88, Z6, Z2, Z20; \
	VSHUFF32X4 $0xdd, Z6, Z2, Z21; \
	VSHUFF32X4 $0x88, Z14, Z10, Z28; \
	VSHUFF32X4 $0xdd, Z14, Z10, Z29; \
	VSHUFF32X4 $0x88, Z7, Z3, Z22; \
	VSHUFF32X4 $0xdd, Z7, Z3, Z23; \
	VSHUFF32X4 $0x88, Z15, Z11, Z30; \
	VSHUFF32X4 $0xdd, Z15, Z11, Z31; \
	VSHUFF32X4 $0x88, Z24, Z16, Z0; \
	VSHUFF32X4 $0xdd, Z24, Z16, Z8; \
	VSHUFF32X4 $0x88, Z25, Z17, Z4; \
	VSHUFF32X4 $0xdd, Z25, Z17, Z12; \
	VSHUFF32X4 $0x88, Z26, Z18, Z1; \
	VSHUFF32X4 $0xdd, Z26, Z18, Z9; \
	VSHUFF32X4 $0x88, Z27, Z19, Z5; \
	VSHUFF32X4 $0xdd, Z27, Z19, Z13; \
	VSHUFF32X4 $0x88, Z28, Z20, Z2; \
	VSHUFF32X4 $0xdd, Z28, Z20, Z10; \
	VSHUFF32X4 $0x88, Z29, Z21, Z6; \
	VSHUFF32X4 $0xdd, Z29, Z21, Z14; \
	VSHUFF32X4 $0x88, Z30, Z22, Z3; \
	VSHUFF32X4 $0xdd, Z30, Z22, Z11; \
	VSHUFF32X4 $0x88, Z31, Z23, Z7; \
	VSHUFF32X4 $0xdd, Z31, Z23, Z15

// func dotT(a *float32, offa *int32, b *float32, offb *int32, n, d int, out *float32, scratch *float32)
//
// refine3: dotGather for row-major operands (sa = sb = 1) without
// gathers: per 16 k the lanes' 16 A row pieces and 16 B row pieces are
// loaded whole and transposed in registers, A's transpose parked in
// scratch[0:256], the accumulators in scratch[256:272], then 16 FMAs in k
// order (one float32 FMA chain per lane, as dotGatherGo). The rows of the
// next batch are prefetched along the way. n is a positive multiple of 16.
TEXT ·dotT(SB), NOSPLIT, $0-64
	MOVQ offa+8(FP), R8
	MOVQ offb+24(FP), R9
	MOVQ n+32(FP), R10
	MOVQ out+48(FP), DI
	MOVQ scratch+56(FP), SI
	MOVQ d+40(FP), R11
	MOVQ R11, R12
	ANDQ $15, R12                    // d % 16
	MOVL $1, AX
	MOVQ R12, CX
	SHLL CX, AX
	DECL AX
	KMOVW AX, K1                     // tail mask
dt_batch:
	MOVQ a+0(FP), AX
	MOVQ b+16(FP), BX
	VPXORD Z16, Z16, Z16
	VMOVUPS Z16, 1024(SI)
	MOVQ R11, R13
	SHRQ $4, R13                     // whole chunks of 16 k
	JZ   dt_tail
dt_chunk:
	CMPQ R10, $16
	JLE  dt_nopf                     // last batch: nothing to prefetch
	MOVLQSX 64(R8), DX
	PREFETCHT0 (AX)(DX*4)
	MOVLQSX 64(R9), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 68(R8), DX
	PREFETCHT0 (AX)(DX*4)
	MOVLQSX 68(R9), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 72(R8), DX
	PREFETCHT0 (AX)(DX*4)
	MOVLQSX 72(R9), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 76(R8), DX
	PREFETCHT0 (AX)(DX*4)
	MOVLQSX 76(R9), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 80(R8), DX
	PREFETCHT0 (AX)(DX*4)
	MOVLQSX 80(R9), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 84(R8), DX
	PREFETCHT0 (AX)(DX*4)
	MOVLQSX 84(R9), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 88(R8), DX
	PREFETCHT0 (AX)(DX*4)
	MOVLQSX 88(R9), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 92(R8), DX
	PREFETCHT0 (AX)(DX*4)
	MOVLQSX 92(R9), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 96(R8), DX
	PREFETCHT0 (AX)(DX*4)
	MOVLQSX 96(R9), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 100(R8), DX
	PREFETCHT0 (AX)(DX*4)
	MOVLQSX 100(R9), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 104(R8), DX
	PREFETCHT0 (AX)(DX*4)
	MOVLQSX 104(R9), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 108(R8), DX
	PREFETCHT0 (AX)(DX*4)
	MOVLQSX 108(R9), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 112(R8), DX
	PREFETCHT0 (AX)(DX*4)
	MOVLQSX 112(R9), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 116(R8), DX
	PREFETCHT0 (AX)(DX*4)
	MOVLQSX 116(R9), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 120(R8), DX
	PREFETCHT0 (AX)(DX*4)
	MOVLQSX 120(R9), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 124(R8), DX
	PREFETCHT0 (AX)(DX*4)
	MOVLQSX 124(R9), DX
	PREFETCHT0 (BX)(DX*4)
dt_nopf:
	MOVLQSX 0(R8), DX
	VMOVUPS (AX)(DX*4), Z0
	MOVLQSX 4(R8), DX
	VMOVUPS (AX)(DX*4), Z1
	MOVLQSX 8(R8), DX
	VMOVUPS (AX)(DX*4), Z2
	MOVLQSX 12(R8), DX
	VMOVUPS (AX)(DX*4), Z3
	MOVLQSX 16(R8), DX
	VMOVUPS (AX)(DX*4), Z4
	MOVLQSX 20(R8), DX
	VMOVUPS (AX)(DX*4), Z5
	MOVLQSX 24(R8), DX
	VMOVUPS (AX)(DX*4), Z6
	MOVLQSX 28(R8), DX
	VMOVUPS (AX)(DX*4), Z7
	MOVLQSX 32(R8), DX
	VMOVUPS (AX)(DX*4), Z8
	MOVLQSX 36(R8), DX
	VMOVUPS (AX)(DX*4), Z9
	MOVLQSX 40(R8), DX
	VMOVUPS (AX)(DX*4), Z10
	MOVLQSX 44(R8), DX
	VMOVUPS (AX)(DX*4), Z11
	MOVLQSX 48(R8), DX
	VMOVUPS (AX)(DX*4), Z12
	MOVLQSX 52(R8), DX
	VMOVUPS (AX)(DX*4), Z13
	MOVLQSX 56(R8), DX
	VMOVUPS (AX)(DX*4), Z14
	MOVLQSX 60(R8), DX
	VMOVUPS (AX)(DX*4), Z15
	TRANSPOSE16
	VMOVUPS Z0, 0(SI)
	VMOVUPS Z1, 64(SI)
	VMOVUPS Z2, 128(SI)
	VMOVUPS Z3, 192(SI)
	VMOVUPS Z4, 256(SI)
	VMOVUPS Z5, 320(SI)
	VMOVUPS Z6, 384(SI)
	VMOVUPS Z7, 448(SI)
	VMOVUPS Z8, 512(SI)
	VMOVUPS Z9, 576(SI)
	VMOVUPS Z10, 640(SI)
	VMOVUPS Z11, 704(SI)
	VMOVUPS Z12, 768(SI)
	VMOVUPS Z13, 832(SI)
	VMOVUPS Z14, 896(SI)
	VMOVUPS Z15, 960(SI)
	MOVLQSX 0(R9), DX
	VMOVUPS (BX)(DX*4), Z0
	MOVLQSX 4(R9), DX
	VMOVUPS (BX)(DX*4), Z1
	MOVLQSX 8(R9), DX
	VMOVUPS (BX)(DX*4), Z2
	MOVLQSX 12(R9), DX
	VMOVUPS (BX)(DX*4), Z3
	MOVLQSX 16(R9), DX
	VMOVUPS (BX)(DX*4), Z4
	MOVLQSX 20(R9), DX
	VMOVUPS (BX)(DX*4), Z5
	MOVLQSX 24(R9), DX
	VMOVUPS (BX)(DX*4), Z6
	MOVLQSX 28(R9), DX
	VMOVUPS (BX)(DX*4), Z7
	MOVLQSX 32(R9), DX
	VMOVUPS (BX)(DX*4), Z8
	MOVLQSX 36(R9), DX
	VMOVUPS (BX)(DX*4), Z9
	MOVLQSX 40(R9), DX
	VMOVUPS (BX)(DX*4), Z10
	MOVLQSX 44(R9), DX
	VMOVUPS (BX)(DX*4), Z11
	MOVLQSX 48(R9), DX
	VMOVUPS (BX)(DX*4), Z12
	MOVLQSX 52(R9), DX
	VMOVUPS (BX)(DX*4), Z13
	MOVLQSX 56(R9), DX
	VMOVUPS (BX)(DX*4), Z14
	MOVLQSX 60(R9), DX
	VMOVUPS (BX)(DX*4), Z15
	TRANSPOSE16
	VMOVUPS 1024(SI), Z16
	VFMADD231PS 0(SI), Z0, Z16
	VFMADD231PS 64(SI), Z1, Z16
	VFMADD231PS 128(SI), Z2, Z16
	VFMADD231PS 192(SI), Z3, Z16
	VFMADD231PS 256(SI), Z4, Z16
	VFMADD231PS 320(SI), Z5, Z16
	VFMADD231PS 384(SI), Z6, Z16
	VFMADD231PS 448(SI), Z7, Z16
	VFMADD231PS 512(SI), Z8, Z16
	VFMADD231PS 576(SI), Z9, Z16
	VFMADD231PS 640(SI), Z10, Z16
	VFMADD231PS 704(SI), Z11, Z16
	VFMADD231PS 768(SI), Z12, Z16
	VFMADD231PS 832(SI), Z13, Z16
	VFMADD231PS 896(SI), Z14, Z16
	VFMADD231PS 960(SI), Z15, Z16
	VMOVUPS Z16, 1024(SI)
	ADDQ $64, AX
	ADDQ $64, BX
	DECQ R13
	JNZ  dt_chunk
dt_tail:
	TESTQ R12, R12
	JZ   dt_store
	MOVLQSX 0(R8), DX
	VMOVUPS.Z (AX)(DX*4), K1, Z0
	MOVLQSX 4(R8), DX
	VMOVUPS.Z (AX)(DX*4), K1, Z1
	MOVLQSX 8(R8), DX
	VMOVUPS.Z (AX)(DX*4), K1, Z2
	MOVLQSX 12(R8), DX
	VMOVUPS.Z (AX)(DX*4), K1, Z3
	MOVLQSX 16(R8), DX
	VMOVUPS.Z (AX)(DX*4), K1, Z4
	MOVLQSX 20(R8), DX
	VMOVUPS.Z (AX)(DX*4), K1, Z5
	MOVLQSX 24(R8), DX
	VMOVUPS.Z (AX)(DX*4), K1, Z6
	MOVLQSX 28(R8), DX
	VMOVUPS.Z (AX)(DX*4), K1, Z7
	MOVLQSX 32(R8), DX
	VMOVUPS.Z (AX)(DX*4), K1, Z8
	MOVLQSX 36(R8), DX
	VMOVUPS.Z (AX)(DX*4), K1, Z9
	MOVLQSX 40(R8), DX
	VMOVUPS.Z (AX)(DX*4), K1, Z10
	MOVLQSX 44(R8), DX
	VMOVUPS.Z (AX)(DX*4), K1, Z11
	MOVLQSX 48(R8), DX
	VMOVUPS.Z (AX)(DX*4), K1, Z12
	MOVLQSX 52(R8), DX
	VMOVUPS.Z (AX)(DX*4), K1, Z13
	MOVLQSX 56(R8), DX
	VMOVUPS.Z (AX)(DX*4), K1, Z14
	MOVLQSX 60(R8), DX
	VMOVUPS.Z (AX)(DX*4), K1, Z15
	TRANSPOSE16
	VMOVUPS Z0, 0(SI)
	VMOVUPS Z1, 64(SI)
	VMOVUPS Z2, 128(SI)
	VMOVUPS Z3, 192(SI)
	VMOVUPS Z4, 256(SI)
	VMOVUPS Z5, 320(SI)
	VMOVUPS Z6, 384(SI)
	VMOVUPS Z7, 448(SI)
	VMOVUPS Z8, 512(SI)
	VMOVUPS Z9, 576(SI)
	VMOVUPS Z10, 640(SI)
	VMOVUPS Z11, 704(SI)
	VMOVUPS Z12, 768(SI)
	VMOVUPS Z13, 832(SI)
	VMOVUPS Z14, 896(SI)
	VMOVUPS Z15, 960(SI)
	MOVLQSX 0(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z0
	MOVLQSX 4(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z1
	MOVLQSX 8(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z2
	MOVLQSX 12(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z3
	MOVLQSX 16(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z4
	MOVLQSX 20(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z5
	MOVLQSX 24(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z6
	MOVLQSX 28(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z7
	MOVLQSX 32(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z8
	MOVLQSX 36(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z9
	MOVLQSX 40(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z10
	MOVLQSX 44(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z11
	MOVLQSX 48(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z12
	MOVLQSX 52(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z13
	MOVLQSX 56(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z14
	MOVLQSX 60(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z15
	TRANSPOSE16
	VMOVUPS 1024(SI), Z16
	CMPQ R12, $1
	JLT  dt_tdone
	VFMADD231PS 0(SI), Z0, Z16
	CMPQ R12, $2
	JLT  dt_tdone
	VFMADD231PS 64(SI), Z1, Z16
	CMPQ R12, $3
	JLT  dt_tdone
	VFMADD231PS 128(SI), Z2, Z16
	CMPQ R12, $4
	JLT  dt_tdone
	VFMADD231PS 192(SI), Z3, Z16
	CMPQ R12, $5
	JLT  dt_tdone
	VFMADD231PS 256(SI), Z4, Z16
	CMPQ R12, $6
	JLT  dt_tdone
	VFMADD231PS 320(SI), Z5, Z16
	CMPQ R12, $7
	JLT  dt_tdone
	VFMADD231PS 384(SI), Z6, Z16
	CMPQ R12, $8
	JLT  dt_tdone
	VFMADD231PS 448(SI), Z7, Z16
	CMPQ R12, $9
	JLT  dt_tdone
	VFMADD231PS 512(SI), Z8, Z16
	CMPQ R12, $10
	JLT  dt_tdone
	VFMADD231PS 576(SI), Z9, Z16
	CMPQ R12, $11
	JLT  dt_tdone
	VFMADD231PS 640(SI), Z10, Z16
	CMPQ R12, $12
	JLT  dt_tdone
	VFMADD231PS 704(SI), Z11, Z16
	CMPQ R12, $13
	JLT  dt_tdone
	VFMADD231PS 768(SI), Z12, Z16
	CMPQ R12, $14
	JLT  dt_tdone
	VFMADD231PS 832(SI), Z13, Z16
	CMPQ R12, $15
	JLT  dt_tdone
	VFMADD231PS 896(SI), Z14, Z16
	CMPQ R12, $16
	JLT  dt_tdone
	VFMADD231PS 960(SI), Z15, Z16
dt_tdone:
	VMOVUPS Z16, 1024(SI)
dt_store:
	VMOVUPS 1024(SI), Z16
	VMOVUPS Z16, (DI)
	ADDQ $64, R8
	ADDQ $64, R9
	ADDQ $64, DI
	SUBQ $16, R10
	JNZ  dt_batch
	VZEROUPPER
	RET

// func dotT1(a *float32, b *float32, offb *int32, n, d int, out *float32, pf *int32, scratch *float32)
//
// refine4: dotGather1 for a row-major A row and row-major B rows (sa = sb
// = 1): per 16 k the lanes' 16 B row pieces are loaded whole and
// transposed in registers, then 16 FMAs with A broadcast from memory
// (accumulators parked in scratch[0:16] across the transpose). When pf is
// not nil the 16 rows at offsets pf[0..15] are prefetched, 64 bytes per row
// per 16 k. n is a positive multiple of 16.
TEXT ·dotT1(SB), NOSPLIT, $0-64
	MOVQ offb+16(FP), R9
	MOVQ n+24(FP), R10
	MOVQ out+40(FP), DI
	MOVQ pf+48(FP), R8
	MOVQ scratch+56(FP), SI
	MOVQ d+32(FP), R11
	MOVQ R11, R12
	ANDQ $15, R12
	MOVL $1, AX
	MOVQ R12, CX
	SHLL CX, AX
	DECL AX
	KMOVW AX, K1
dt1_batch:
	MOVQ a+0(FP), AX
	MOVQ b+8(FP), BX
	VPXORD Z16, Z16, Z16
	VMOVUPS Z16, (SI)
	MOVQ R11, R13
	SHRQ $4, R13
	JZ   dt1_tail
dt1_chunk:
	TESTQ R8, R8
	JZ   dt1_nopf
	MOVLQSX 0(R8), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 4(R8), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 8(R8), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 12(R8), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 16(R8), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 20(R8), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 24(R8), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 28(R8), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 32(R8), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 36(R8), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 40(R8), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 44(R8), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 48(R8), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 52(R8), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 56(R8), DX
	PREFETCHT0 (BX)(DX*4)
	MOVLQSX 60(R8), DX
	PREFETCHT0 (BX)(DX*4)
dt1_nopf:
	MOVLQSX 0(R9), DX
	VMOVUPS (BX)(DX*4), Z0
	MOVLQSX 4(R9), DX
	VMOVUPS (BX)(DX*4), Z1
	MOVLQSX 8(R9), DX
	VMOVUPS (BX)(DX*4), Z2
	MOVLQSX 12(R9), DX
	VMOVUPS (BX)(DX*4), Z3
	MOVLQSX 16(R9), DX
	VMOVUPS (BX)(DX*4), Z4
	MOVLQSX 20(R9), DX
	VMOVUPS (BX)(DX*4), Z5
	MOVLQSX 24(R9), DX
	VMOVUPS (BX)(DX*4), Z6
	MOVLQSX 28(R9), DX
	VMOVUPS (BX)(DX*4), Z7
	MOVLQSX 32(R9), DX
	VMOVUPS (BX)(DX*4), Z8
	MOVLQSX 36(R9), DX
	VMOVUPS (BX)(DX*4), Z9
	MOVLQSX 40(R9), DX
	VMOVUPS (BX)(DX*4), Z10
	MOVLQSX 44(R9), DX
	VMOVUPS (BX)(DX*4), Z11
	MOVLQSX 48(R9), DX
	VMOVUPS (BX)(DX*4), Z12
	MOVLQSX 52(R9), DX
	VMOVUPS (BX)(DX*4), Z13
	MOVLQSX 56(R9), DX
	VMOVUPS (BX)(DX*4), Z14
	MOVLQSX 60(R9), DX
	VMOVUPS (BX)(DX*4), Z15
	TRANSPOSE16
	VMOVUPS (SI), Z16
	VFMADD231PS.BCST 0(AX), Z0, Z16
	VFMADD231PS.BCST 4(AX), Z1, Z16
	VFMADD231PS.BCST 8(AX), Z2, Z16
	VFMADD231PS.BCST 12(AX), Z3, Z16
	VFMADD231PS.BCST 16(AX), Z4, Z16
	VFMADD231PS.BCST 20(AX), Z5, Z16
	VFMADD231PS.BCST 24(AX), Z6, Z16
	VFMADD231PS.BCST 28(AX), Z7, Z16
	VFMADD231PS.BCST 32(AX), Z8, Z16
	VFMADD231PS.BCST 36(AX), Z9, Z16
	VFMADD231PS.BCST 40(AX), Z10, Z16
	VFMADD231PS.BCST 44(AX), Z11, Z16
	VFMADD231PS.BCST 48(AX), Z12, Z16
	VFMADD231PS.BCST 52(AX), Z13, Z16
	VFMADD231PS.BCST 56(AX), Z14, Z16
	VFMADD231PS.BCST 60(AX), Z15, Z16
	VMOVUPS Z16, (SI)
	ADDQ $64, AX
	ADDQ $64, BX
	DECQ R13
	JNZ  dt1_chunk
dt1_tail:
	TESTQ R12, R12
	JZ   dt1_store
	MOVLQSX 0(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z0
	MOVLQSX 4(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z1
	MOVLQSX 8(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z2
	MOVLQSX 12(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z3
	MOVLQSX 16(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z4
	MOVLQSX 20(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z5
	MOVLQSX 24(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z6
	MOVLQSX 28(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z7
	MOVLQSX 32(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z8
	MOVLQSX 36(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z9
	MOVLQSX 40(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z10
	MOVLQSX 44(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z11
	MOVLQSX 48(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z12
	MOVLQSX 52(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z13
	MOVLQSX 56(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z14
	MOVLQSX 60(R9), DX
	VMOVUPS.Z (BX)(DX*4), K1, Z15
	TRANSPOSE16
	VMOVUPS (SI), Z16
	CMPQ R12, $1
	JLT  dt1_tdone
	VFMADD231PS.BCST 0(AX), Z0, Z16
	CMPQ R12, $2
	JLT  dt1_tdone
	VFMADD231PS.BCST 4(AX), Z1, Z16
	CMPQ R12, $3
	JLT  dt1_tdone
	VFMADD231PS.BCST 8(AX), Z2, Z16
	CMPQ R12, $4
	JLT  dt1_tdone
	VFMADD231PS.BCST 12(AX), Z3, Z16
	CMPQ R12, $5
	JLT  dt1_tdone
	VFMADD231PS.BCST 16(AX), Z4, Z16
	CMPQ R12, $6
	JLT  dt1_tdone
	VFMADD231PS.BCST 20(AX), Z5, Z16
	CMPQ R12, $7
	JLT  dt1_tdone
	VFMADD231PS.BCST 24(AX), Z6, Z16
	CMPQ R12, $8
	JLT  dt1_tdone
	VFMADD231PS.BCST 28(AX), Z7, Z16
	CMPQ R12, $9
	JLT  dt1_tdone
	VFMADD231PS.BCST 32(AX), Z8, Z16
	CMPQ R12, $10
	JLT  dt1_tdone
	VFMADD231PS.BCST 36(AX), Z9, Z16
	CMPQ R12, $11
	JLT  dt1_tdone
	VFMADD231PS.BCST 40(AX), Z10, Z16
	CMPQ R12, $12
	JLT  dt1_tdone
	VFMADD231PS.BCST 44(AX), Z11, Z16
	CMPQ R12, $13
	JLT  dt1_tdone
	VFMADD231PS.BCST 48(AX), Z12, Z16
	CMPQ R12, $14
	JLT  dt1_tdone
	VFMADD231PS.BCST 52(AX), Z13, Z16
	CMPQ R12, $15
	JLT  dt1_tdone
	VFMADD231PS.BCST 56(AX), Z14, Z16
	CMPQ R12, $16
	JLT  dt1_tdone
	VFMADD231PS.BCST 60(AX), Z15, Z16
dt1_tdone:
	VMOVUPS Z16, (SI)
dt1_store:
	VMOVUPS (SI), Z16
	VMOVUPS Z16, (DI)
	ADDQ $64, R9
	ADDQ $64, DI
	SUBQ $16, R10
	JNZ  dt1_batch
	VZEROUPPER
	RET
