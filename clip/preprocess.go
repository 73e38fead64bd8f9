package clip

import (
	"fmt"
	"math"
)

// CLIP's normalisation (open_clip OPENAI_DATASET_MEAN / OPENAI_DATASET_STD).
var (
	Mean = [3]float32{0.48145466, 0.4578275, 0.40821073}
	Std  = [3]float32{0.26862954, 0.26130258, 0.27577711}
)

// ResizedSize is torchvision's Resize(size) output for a w x h image: the
// shorter side becomes size, the longer int(size·long/short).
func ResizedSize(w, h, size int) (nw, nh int) {
	if w <= h {
		return size, int(float64(size*h) / float64(w))
	}
	return int(float64(size*w) / float64(h)), size
}

// CenterCrop is torchvision's CenterCrop(size) offset into an nw x nh image:
// int(round((n - size) / 2.0)) with Python's round-half-to-even.
func CenterCrop(nw, nh, size int) (left, top int) {
	return int(math.RoundToEven(float64(nw-size) / 2)), int(math.RoundToEven(float64(nh-size) / 2))
}

// precisionBits is PIL's fixed-point precision for 8-bit resampling
// (Resample.c: 32 - 8 - 2).
const precisionBits = 32 - 8 - 2

// bicubic is PIL's bicubic kernel (a = -0.5), support 2.
func bicubic(x float64) float64 {
	const a = -0.5
	if x < 0 {
		x = -x
	}
	if x < 1 {
		return ((a+2)*x-(a+3))*x*x + 1
	}
	if x < 2 {
		return (((x-5)*x+8)*x - 4) * a
	}
	return 0
}

// coeffs are PIL's precomputed resampling weights for one axis: output i
// reads in[Min[i] : Min[i]+N[i]] with weights K[i*KSize : i*KSize+N[i]],
// fixed point with precisionBits.
type coeffs struct {
	Min, N []int
	K      []int32
	KSize  int
}

// pilCoeffs is Resample.c precompute_coeffs + normalize_coeffs_8bpc for the
// whole axis [0, in) -> [0, out), computed as PIL does in double precision.
func pilCoeffs(in, out int) coeffs {
	scale := float64(in) / float64(out)
	filterscale := max(scale, 1)
	support := 2 * filterscale
	ksize := int(math.Ceil(support))*2 + 1
	c := coeffs{Min: make([]int, out), N: make([]int, out), K: make([]int32, out*ksize), KSize: ksize}
	k := make([]float64, ksize)
	for xx := 0; xx < out; xx++ {
		center := (float64(xx) + 0.5) * scale
		ss := 1 / filterscale
		xmin := int(center - support + 0.5)
		if xmin < 0 {
			xmin = 0
		}
		xmax := int(center + support + 0.5)
		if xmax > in {
			xmax = in
		}
		xmax -= xmin
		ww := 0.0
		for x := 0; x < xmax; x++ {
			w := bicubic((float64(x+xmin) - center + 0.5) * ss)
			k[x] = w
			ww += w
		}
		for x := 0; x < xmax; x++ {
			if ww != 0 {
				k[x] /= ww
			}
			v := k[x] * (1 << precisionBits)
			if v < 0 {
				c.K[xx*ksize+x] = int32(-0.5 + v)
			} else {
				c.K[xx*ksize+x] = int32(0.5 + v)
			}
		}
		c.Min[xx], c.N[xx] = xmin, xmax
	}
	return c
}

// clip8 is PIL's clip8 for a fixed-point sum.
func clip8(v int32) uint8 {
	if v >= 1<<precisionBits<<8 {
		return 255
	}
	if v <= 0 {
		return 0
	}
	return uint8(v >> precisionBits)
}

// nearestIndex is PIL's ImagingScaleAffine source index for outputs
// [0, out) of an axis scaled from in (NEAREST resize of P and 1 images):
// coordinates accumulate in double from 0.5·in/out in steps of in/out.
func nearestIndex(in, out int) []int {
	a := float64(in) / float64(out)
	idx := make([]int, out)
	o := a * 0.5
	for i := range idx {
		v := int(o) // COORD: o is never negative here
		if v >= in {
			v = in - 1
		}
		idx[i] = v
		o += a
	}
	return idx
}

// muldiv255 is PIL's MULDIV255.
func muldiv255(a, b uint32) uint8 {
	t := a*b + 128
	return uint8(((t >> 8) + t) >> 8)
}

// cmykToRGB is PIL's cmyk2rgb (Convert.c).
func cmykToRGB(c, m, y, k uint8) (r, g, b uint8) {
	nk := uint32(255 - k)
	f := func(v uint8) uint8 { return uint8(int32(nk) - int32(muldiv255(uint32(v), nk))) }
	return f(c), f(m), f(y)
}

// Preprocessor turns Pictures into CLIP input tensors; it keeps scratch
// buffers and coefficient tables, so use one per goroutine.
type Preprocessor struct {
	Size   int
	lut    [3][256]float32
	tables map[[2]int]coeffs
	buf    [3][]uint8
}

// NewPreprocessor makes a Preprocessor for size x size inputs.
func NewPreprocessor(size int) *Preprocessor {
	pp := &Preprocessor{Size: size, tables: map[[2]int]coeffs{}}
	for c := 0; c < 3; c++ {
		for v := 0; v < 256; v++ {
			// torchvision ToTensor then Normalize, in float32
			pp.lut[c][v] = (float32(v)/255 - Mean[c]) / Std[c]
		}
	}
	return pp
}

func (pp *Preprocessor) coeffs(in, out int) coeffs {
	key := [2]int{in, out}
	c, ok := pp.tables[key]
	if !ok {
		if len(pp.tables) > 256 {
			clear(pp.tables)
		}
		c = pilCoeffs(in, out)
		pp.tables[key] = c
	}
	return c
}

func grow(b []uint8, n int) []uint8 {
	if cap(b) < n {
		return make([]uint8, n)
	}
	return b[:n]
}

// Run writes p's CLIP tensor [3, Size, Size] (channel-planar float32) into
// dst, as open_clip's image_transform does: Resize(Size, BICUBIC) on the
// image in its own mode, CenterCrop(Size), convert("RGB"), ToTensor,
// Normalize(Mean, Std). It computes only the cropped window; the values
// are those of the full resize.
func (pp *Preprocessor) Run(p *Picture, dst []float32) error {
	S := pp.Size
	if len(dst) < 3*S*S {
		return fmt.Errorf("clip: Preprocess: dst has %d values, want %d", len(dst), 3*S*S)
	}
	nw, nh := ResizedSize(p.W, p.H, S)
	left, top := CenterCrop(nw, nh, S)
	C := p.C
	// win: the resized, cropped window, S x S pixels of C channels
	var win []uint8
	switch {
	case nw == p.W && nh == p.H: // torchvision returns the image as is
		win = grow(pp.buf[1], S*S*C)
		pp.buf[1] = win
		for y := 0; y < S; y++ {
			copy(win[y*S*C:(y+1)*S*C], p.Pix[((top+y)*p.W+left)*C:])
		}
	case p.Mode == ModeP || p.Mode == Mode1:
		xi, yi := nearestIndex(p.W, nw), nearestIndex(p.H, nh)
		win = grow(pp.buf[1], S*S)
		pp.buf[1] = win
		for y := 0; y < S; y++ {
			row := p.Pix[yi[top+y]*p.W:]
			for x := 0; x < S; x++ {
				win[y*S+x] = row[xi[left+x]]
			}
		}
	default:
		src := p.Pix
		if p.Mode == ModeRGBA { // PIL resizes RGBA as premultiplied RGBa
			pre := grow(pp.buf[0], len(src))
			pp.buf[0] = pre
			for i := 0; i < len(src); i += 4 {
				a := uint32(src[i+3])
				pre[i] = muldiv255(uint32(src[i]), a)
				pre[i+1] = muldiv255(uint32(src[i+1]), a)
				pre[i+2] = muldiv255(uint32(src[i+2]), a)
				pre[i+3] = src[i+3]
			}
			src = pre
		}
		win = pp.resample(src, p.W, p.H, C, nw, nh, left, top)
		if p.Mode == ModeRGBA {
			for i := 0; i < len(win); i += 4 {
				a := uint32(win[i+3])
				if a != 0 && a != 255 {
					for c := 0; c < 3; c++ {
						v := 255 * uint32(win[i+c]) / a
						if v > 255 {
							v = 255
						}
						win[i+c] = uint8(v)
					}
				}
			}
		}
	}
	// convert("RGB") and normalise into planes
	r, g, b := dst[:S*S], dst[S*S:2*S*S], dst[2*S*S:3*S*S]
	lr, lg, lb := &pp.lut[0], &pp.lut[1], &pp.lut[2]
	switch {
	case p.Mode == ModeP:
		for i := 0; i < S*S; i++ {
			var c [3]uint8
			if int(win[i]) < len(p.Pal) {
				c = p.Pal[win[i]]
			}
			r[i], g[i], b[i] = lr[c[0]], lg[c[1]], lb[c[2]]
		}
	case C == 1:
		for i, v := range win[:S*S] {
			r[i], g[i], b[i] = lr[v], lg[v], lb[v]
		}
	case p.Mode == ModeCMYK:
		for i := 0; i < S*S; i++ {
			cr, cg, cb := cmykToRGB(win[4*i], win[4*i+1], win[4*i+2], win[4*i+3])
			r[i], g[i], b[i] = lr[cr], lg[cg], lb[cb]
		}
	default: // RGB, RGBA (alpha dropped)
		for i := 0; i < S*S; i++ {
			px := win[i*C : i*C+3]
			r[i], g[i], b[i] = lr[px[0]], lg[px[1]], lb[px[2]]
		}
	}
	return nil
}

// resample is PIL's two-pass fixed-point resize of src (w x h, C channels)
// to nw x nh, horizontal pass first with 8-bit rounding between passes,
// evaluated on the window [left, left+S) x [top, top+S) only.
func (pp *Preprocessor) resample(src []uint8, w, h, C, nw, nh, left, top int) []uint8 {
	S := pp.Size
	needH, needV := nw != w, nh != h
	// rows of src the vertical pass reads
	y0, y1 := top, top+S
	var vc coeffs
	if needV {
		vc = pp.coeffs(h, nh)
		y0 = vc.Min[top]
		y1 = vc.Min[top+S-1] + vc.N[top+S-1]
		for i := top; i < top+S; i++ {
			y0 = min(y0, vc.Min[i])
			y1 = max(y1, vc.Min[i]+vc.N[i])
		}
	}
	rows := y1 - y0
	tmp := grow(pp.buf[1], rows*S*C)
	pp.buf[1] = tmp
	if needH {
		hc := pp.coeffs(w, nw)
		for y := 0; y < rows; y++ {
			in := src[(y0+y)*w*C : (y0+y+1)*w*C]
			out := tmp[y*S*C : (y+1)*S*C]
			for x := 0; x < S; x++ {
				xx := left + x
				k := hc.K[xx*hc.KSize : xx*hc.KSize+hc.N[xx]]
				px := in[hc.Min[xx]*C:]
				switch C {
				case 1:
					s := int32(1 << (precisionBits - 1))
					for i, kv := range k {
						s += int32(px[i]) * kv
					}
					out[x] = clip8(s)
				case 3:
					s0, s1, s2 := int32(1<<(precisionBits-1)), int32(1<<(precisionBits-1)), int32(1<<(precisionBits-1))
					for i, kv := range k {
						q := px[3*i : 3*i+3 : 3*i+3]
						s0 += int32(q[0]) * kv
						s1 += int32(q[1]) * kv
						s2 += int32(q[2]) * kv
					}
					o := out[3*x : 3*x+3 : 3*x+3]
					o[0], o[1], o[2] = clip8(s0), clip8(s1), clip8(s2)
				default:
					s0, s1, s2, s3 := int32(1<<(precisionBits-1)), int32(1<<(precisionBits-1)), int32(1<<(precisionBits-1)), int32(1<<(precisionBits-1))
					for i, kv := range k {
						q := px[4*i : 4*i+4 : 4*i+4]
						s0 += int32(q[0]) * kv
						s1 += int32(q[1]) * kv
						s2 += int32(q[2]) * kv
						s3 += int32(q[3]) * kv
					}
					o := out[4*x : 4*x+4 : 4*x+4]
					o[0], o[1], o[2], o[3] = clip8(s0), clip8(s1), clip8(s2), clip8(s3)
				}
			}
		}
	} else {
		for y := 0; y < rows; y++ {
			copy(tmp[y*S*C:(y+1)*S*C], src[((y0+y)*w+left)*C:])
		}
	}
	win := grow(pp.buf[2], S*S*C)
	pp.buf[2] = win
	if !needV {
		copy(win, tmp[(top-y0)*S*C:])
		return win
	}
	acc := make([]int32, S*C)
	for y := 0; y < S; y++ {
		yy := top + y
		k := vc.K[yy*vc.KSize : yy*vc.KSize+vc.N[yy]]
		for i := range acc {
			acc[i] = 1 << (precisionBits - 1)
		}
		for j, kv := range k {
			in := tmp[(vc.Min[yy]-y0+j)*S*C : (vc.Min[yy]-y0+j+1)*S*C]
			for i, v := range in {
				acc[i] += int32(v) * kv
			}
		}
		out := win[y*S*C : (y+1)*S*C]
		for i, s := range acc {
			out[i] = clip8(s)
		}
	}
	return win
}
