package clip

import "math"

// ---------------------------------------------------------------------------
// Plain reference of Preprocessor.Run
// ---------------------------------------------------------------------------
//
// PreprocessRef follows PIL and torchvision step by step on the whole image,
// with none of Run's shortcuts (no window, no tables, no fused conversion):
// the specification Run is tested against, and the "independent" input the
// embed stage's end-to-end test feeds to ONNX Runtime.

// pilWeights is one output sample's window and fixed-point weights
// (Resample.c precompute_coeffs + normalize_coeffs_8bpc).
func pilWeights(in, out, i int) (xmin int, k []int32) {
	scale := float64(in) / float64(out)
	fs := math.Max(scale, 1)
	support := 2 * fs
	center := (float64(i) + 0.5) * scale
	xmin = int(center - support + 0.5)
	if xmin < 0 {
		xmin = 0
	}
	xmax := int(center + support + 0.5)
	if xmax > in {
		xmax = in
	}
	w := make([]float64, xmax-xmin)
	var sum float64
	for x := range w {
		w[x] = bicubic((float64(x+xmin) - center + 0.5) / fs)
		sum += w[x]
	}
	k = make([]int32, len(w))
	for x := range w {
		if sum != 0 {
			w[x] /= sum
		}
		if w[x] < 0 {
			k[x] = int32(-0.5 + w[x]*(1<<precisionBits))
		} else {
			k[x] = int32(0.5 + w[x]*(1<<precisionBits))
		}
	}
	return xmin, k
}

// PreprocessRef returns p's CLIP tensor [3, size, size] (see Preprocessor.Run).
func PreprocessRef(p *Picture, size int) []float32 {
	w, h, C := p.W, p.H, p.C
	nw, nh := ResizedSize(w, h, size)
	img := append([]uint8(nil), p.Pix...)
	at := func(buf []uint8, width, x, y, c int) uint8 { return buf[(y*width+x)*C+c] }
	if nw != w || nh != h {
		if p.Mode == ModeP || p.Mode == Mode1 {
			// NEAREST, PIL's ImagingScaleAffine
			out := make([]uint8, nw*nh)
			ax, ay := float64(w)/float64(nw), float64(h)/float64(nh)
			yo := ay * 0.5
			for y := 0; y < nh; y++ {
				xo := ax * 0.5
				for x := 0; x < nw; x++ {
					out[y*nw+x] = img[min(int(yo), h-1)*w+min(int(xo), w-1)]
					xo += ax
				}
				yo += ay
			}
			img = out
		} else {
			if p.Mode == ModeRGBA { // RGBA -> RGBa
				for i := 0; i < len(img); i += 4 {
					for c := 0; c < 3; c++ {
						img[i+c] = muldiv255(uint32(img[i+c]), uint32(img[i+3]))
					}
				}
			}
			if nw != w { // horizontal pass, every row
				out := make([]uint8, nw*h*C)
				for y := 0; y < h; y++ {
					for x := 0; x < nw; x++ {
						xmin, k := pilWeights(w, nw, x)
						for c := 0; c < C; c++ {
							s := int32(1 << (precisionBits - 1))
							for j := range k {
								s += int32(at(img, w, xmin+j, y, c)) * k[j]
							}
							out[(y*nw+x)*C+c] = clip8(s)
						}
					}
				}
				img = out
			}
			if nh != h { // vertical pass
				out := make([]uint8, nw*nh*C)
				for y := 0; y < nh; y++ {
					ymin, k := pilWeights(h, nh, y)
					for x := 0; x < nw; x++ {
						for c := 0; c < C; c++ {
							s := int32(1 << (precisionBits - 1))
							for j := range k {
								s += int32(at(img, nw, x, ymin+j, c)) * k[j]
							}
							out[(y*nw+x)*C+c] = clip8(s)
						}
					}
				}
				img = out
			}
			if p.Mode == ModeRGBA { // RGBa -> RGBA
				for i := 0; i < len(img); i += 4 {
					a := int(img[i+3])
					if a == 0 || a == 255 {
						continue
					}
					for c := 0; c < 3; c++ {
						img[i+c] = uint8(min(255, 255*int(img[i+c])/a))
					}
				}
			}
		}
	}
	left, top := CenterCrop(nw, nh, size)
	out := make([]float32, 3*size*size)
	for y := 0; y < size; y++ {
		for x := 0; x < size; x++ {
			i := ((top+y)*nw + left + x) * C
			var rgb [3]uint8
			switch p.Mode {
			case ModeL, Mode1:
				rgb = [3]uint8{img[i], img[i], img[i]}
			case ModeP:
				if int(img[i]) < len(p.Pal) {
					rgb = p.Pal[img[i]]
				}
			case ModeCMYK:
				rgb[0], rgb[1], rgb[2] = cmykToRGB(img[i], img[i+1], img[i+2], img[i+3])
			default:
				rgb = [3]uint8{img[i], img[i+1], img[i+2]}
			}
			for c := 0; c < 3; c++ {
				v := float32(rgb[c]) / 255
				out[c*size*size+y*size+x] = (v - Mean[c]) / Std[c]
			}
		}
	}
	return out
}
