package clip

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"

	"golang.org/x/image/webp"
)

// Mode is the PIL mode a decoded file has; it decides how PIL resamples it
// before open_clip's convert("RGB").
type Mode int

const (
	ModeL    Mode = iota // 8-bit grey: bicubic
	ModeRGB              // bicubic per channel
	ModeRGBA             // bicubic on premultiplied RGBa, then un-premultiplied; alpha dropped after
	ModeCMYK             // bicubic per ink, then PIL's cmyk2rgb
	ModeP                // palette: PIL resizes "P" with NEAREST
	Mode1                // bilevel: NEAREST too
)

var modeNames = [...]string{"L", "RGB", "RGBA", "CMYK", "P", "1"}

func (m Mode) String() string { return modeNames[m] }

// Picture is a decoded image in PIL's terms: W x H pixels of C interleaved
// 8-bit channels (1 for L, 1 and P, 3 for RGB, 4 for RGBA and CMYK); P
// holds palette indices and Pal the RGB palette.
type Picture struct {
	W, H   int
	Mode   Mode
	C      int
	Pix    []uint8
	Pal    [][3]uint8
	Format string // jpeg | png | webp
}

// ErrFormat marks data that is not a JPEG, PNG or WebP image.
var ErrFormat = errors.New("not a JPEG, PNG or WebP image")

// Decode decodes a JPEG, PNG or WebP file into the planes PIL would hold
// after Image.open: YCbCr and greyscale JPEGs by libjpeg-turbo when it is
// there (turbo.go: PIL's decoder, so exactly PIL's pixels), else by
// image/jpeg with libjpeg's fancy upsampling and YCbCr tables (pixels match
// up to the IDCT's rounding); CMYK/YCCK JPEGs (image/jpeg) as CMYK, PNG palette and bilevel images in P and 1 modes,
// PNG tRNS ignored on grey/RGB (as PIL's convert("RGB") does), 16-bit PNG
// samples cut to their high byte.
func Decode(data []byte) (*Picture, error) {
	switch {
	case len(data) >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff:
		if p, err, ok := decodeTurbo(data); ok {
			return p, err
		}
		img, err := jpeg.Decode(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("jpeg: %w", err)
		}
		p, err := fromImage(img, -1, 8)
		if p != nil {
			p.Format = "jpeg"
		}
		return p, err
	case len(data) >= 29 && string(data[:8]) == "\x89PNG\r\n\x1a\n":
		img, err := png.Decode(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("png: %w", err)
		}
		// IHDR: bit depth at byte 24, colour type at 25.
		p, err := fromImage(img, int(data[25]), int(data[24]))
		if p != nil {
			p.Format = "png"
		}
		return p, err
	case len(data) >= 12 && string(data[:4]) == "RIFF" && string(data[8:12]) == "WEBP":
		img, err := webp.Decode(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("webp: %w", err)
		}
		var p *Picture
		if y, ok := img.(*image.YCbCr); ok {
			p = webpYCbCr(y, nil)
		} else if y, ok := img.(*image.NYCbCrA); ok {
			p = webpYCbCr(&y.YCbCr, y.A)
		} else {
			p, err = fromImage(img, -1, 8)
		}
		if p != nil {
			p.Format = "webp"
		}
		return p, err
	}
	return nil, ErrFormat
}

// fromImage converts a decoded image; pngType is the PNG colour type (-1
// for other formats).
func fromImage(img image.Image, pngType, depth int) (*Picture, error) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w < 1 || h < 1 {
		return nil, fmt.Errorf("empty image (%dx%d)", w, h)
	}
	p := &Picture{W: w, H: h}
	alloc := func(m Mode, c int) {
		p.Mode, p.C = m, c
		p.Pix = make([]uint8, w*h*c)
	}
	switch m := img.(type) {
	case *image.YCbCr:
		alloc(ModeRGB, 3)
		jpegYCbCr(m, p.Pix)
	case *image.Gray:
		alloc(ModeL, 1)
		if pngType == 0 && depth == 1 {
			p.Mode = Mode1
		}
		for y := 0; y < h; y++ {
			copy(p.Pix[y*w:(y+1)*w], m.Pix[y*m.Stride:])
		}
	case *image.Gray16:
		alloc(ModeL, 1)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				p.Pix[y*w+x] = m.Pix[y*m.Stride+2*x]
			}
		}
	case *image.CMYK:
		alloc(ModeCMYK, 4)
		for y := 0; y < h; y++ {
			copy(p.Pix[y*w*4:(y+1)*w*4], m.Pix[y*m.Stride:])
		}
	case *image.Paletted:
		alloc(ModeP, 1)
		p.Pal = make([][3]uint8, len(m.Palette))
		for i, c := range m.Palette {
			n := color.NRGBAModel.Convert(c).(color.NRGBA)
			p.Pal[i] = [3]uint8{n.R, n.G, n.B}
		}
		for y := 0; y < h; y++ {
			copy(p.Pix[y*w:(y+1)*w], m.Pix[y*m.Stride:])
		}
	case *image.NRGBA:
		switch pngType {
		case 0: // grey with tRNS: PIL keeps L
			alloc(ModeL, 1)
			for i := 0; i < w*h; i++ {
				p.Pix[i] = m.Pix[(i/w)*m.Stride+4*(i%w)]
			}
		case 2: // RGB with tRNS: PIL keeps RGB
			alloc(ModeRGB, 3)
			copyRGB(p.Pix, m.Pix, m.Stride, w, h, 1)
		default:
			alloc(ModeRGBA, 4)
			for y := 0; y < h; y++ {
				copy(p.Pix[y*w*4:(y+1)*w*4], m.Pix[y*m.Stride:])
			}
		}
	case *image.NRGBA64:
		if pngType == 0 {
			alloc(ModeL, 1)
			for i := 0; i < w*h; i++ {
				p.Pix[i] = m.Pix[(i/w)*m.Stride+8*(i%w)]
			}
		} else if pngType == 2 {
			alloc(ModeRGB, 3)
			copyRGB(p.Pix, m.Pix, m.Stride, w, h, 2)
		} else {
			alloc(ModeRGBA, 4)
			for i := 0; i < w*h; i++ {
				for c := 0; c < 4; c++ {
					p.Pix[4*i+c] = m.Pix[(i/w)*m.Stride+8*(i%w)+2*c]
				}
			}
		}
	case *image.RGBA: // opaque PNG RGB, Adobe RGB JPEG
		alloc(ModeRGB, 3)
		copyRGB(p.Pix, m.Pix, m.Stride, w, h, 1)
	case *image.RGBA64:
		alloc(ModeRGB, 3)
		copyRGB(p.Pix, m.Pix, m.Stride, w, h, 2)
	default: // anything else, through the standard colour model
		alloc(ModeRGBA, 4)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				c := color.NRGBAModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA)
				copy(p.Pix[(y*w+x)*4:], []uint8{c.R, c.G, c.B, c.A})
			}
		}
	}
	return p, nil
}

// copyRGB takes R, G, B of 4-channel rows whose samples are bytesPer bytes
// wide (the high byte of 16-bit samples).
func copyRGB(dst, src []uint8, stride, w, h, bytesPer int) {
	for y := 0; y < h; y++ {
		row := src[y*stride:]
		for x := 0; x < w; x++ {
			for c := 0; c < 3; c++ {
				dst[(y*w+x)*3+c] = row[(4*x+c)*bytesPer]
			}
		}
	}
}

// ---------------------------------------------------------------------------
// JPEG colour as libjpeg(-turbo) does it
// ---------------------------------------------------------------------------

// libjpeg's jdcolor.c tables: SCALEBITS 16, FIX(x) = x·2^16 rounded.
var jpegTab struct {
	crR, cbB [256]int32
	crG, cbG [256]int32
}

func init() {
	fix := func(x float64) int32 { return int32(x*65536 + 0.5) }
	const half = 1 << 15
	for i := 0; i < 256; i++ {
		x := int32(i - 128)
		jpegTab.crR[i] = (fix(1.40200)*x + half) >> 16
		jpegTab.cbB[i] = (fix(1.77200)*x + half) >> 16
		jpegTab.crG[i] = -fix(0.71414) * x
		jpegTab.cbG[i] = -fix(0.34414)*x + half
	}
}

func clamp8(v int32) uint8 {
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// jpegYCbCr converts to interleaved RGB, upsampling 4:2:0, 4:2:2 and 4:4:0
// chroma with libjpeg's "fancy" triangle filters (other ratios: nearest).
func jpegYCbCr(m *image.YCbCr, dst []uint8) {
	w, h := m.Rect.Dx(), m.Rect.Dy()
	cb := upsampleChroma(m, m.Cb, w, h)
	cr := upsampleChroma(m, m.Cr, w, h)
	for y := 0; y < h; y++ {
		yr := m.Y[y*m.YStride:]
		for x := 0; x < w; x++ {
			Y := int32(yr[x])
			b, r := cb[y*w+x], cr[y*w+x]
			o := dst[(y*w+x)*3:]
			o[0] = clamp8(Y + jpegTab.crR[r])
			o[1] = clamp8(Y + ((jpegTab.cbG[b] + jpegTab.crG[r]) >> 16))
			o[2] = clamp8(Y + jpegTab.cbB[b])
		}
	}
}

// upsampleChroma returns a full-size chroma plane (libjpeg jdsample.c
// h2v1_fancy_upsample, h2v2_fancy_upsample, h1v2_fancy_upsample).
func upsampleChroma(m *image.YCbCr, plane []uint8, w, h int) []uint8 {
	out := make([]uint8, w*h)
	cw := (w + 1) / 2
	ch := (h + 1) / 2
	at := func(x, y int) int32 { return int32(plane[y*m.CStride+x]) }
	switch m.SubsampleRatio {
	case image.YCbCrSubsampleRatio444:
		for y := 0; y < h; y++ {
			copy(out[y*w:(y+1)*w], plane[y*m.CStride:])
		}
	case image.YCbCrSubsampleRatio422:
		for y := 0; y < h; y++ {
			row := make([]int32, cw)
			for x := range row {
				row[x] = at(x, y)
			}
			h2Fancy(out[y*w:(y+1)*w], row, w, 3, 1, 2, 2)
		}
	case image.YCbCrSubsampleRatio420:
		sums := make([]int32, cw)
		for y := 0; y < h; y++ {
			cy := y / 2
			ny := cy - 1 // the nearer neighbouring chroma row: above for even rows
			if y%2 == 1 {
				ny = cy + 1
			}
			ny = max(0, min(ch-1, ny))
			for x := range sums {
				sums[x] = 3*at(x, cy) + at(x, ny)
			}
			h2Fancy(out[y*w:(y+1)*w], sums, w, 4, 8, 7, 4)
		}
	case image.YCbCrSubsampleRatio440:
		for y := 0; y < h; y++ {
			cy := y / 2
			ny, bias := cy-1, int32(1)
			if y%2 == 1 {
				ny, bias = cy+1, 2
			}
			ny = max(0, min(ch-1, ny))
			for x := 0; x < w; x++ {
				out[y*w+x] = uint8((3*at(x, cy) + at(x, ny) + bias) >> 2)
			}
		}
	default:
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				out[y*w+x] = plane[m.COffset(x, y)-m.COffset(0, 0)]
			}
		}
	}
	return out
}

// h2Fancy doubles a row of (already vertically weighted) chroma sums:
// output 2i = (3·s[i] + s[i-1] + b0) >> sh, 2i+1 = (3·s[i] + s[i+1] + b1) >> sh,
// with the edge samples scaled by edge (libjpeg's special first and last
// columns). h2v1 uses edge 3 (not scaled: out = s), h2v2 uses 4.
func h2Fancy(out []uint8, s []int32, w int, edge, b0, b1 int32, sh uint) {
	n := len(s)
	if sh == 2 { // h2v1: plain samples, bias 1/2, shift 2
		if n == 1 {
			out[0] = uint8(s[0])
			if w > 1 {
				out[1] = uint8(s[0])
			}
			return
		}
		put := func(i int, v int32) {
			if i < w {
				out[i] = uint8(v)
			}
		}
		put(0, s[0])
		put(1, (s[0]*3+s[1]+2)>>2)
		for i := 1; i < n-1; i++ {
			put(2*i, (s[i]*3+s[i-1]+1)>>2)
			put(2*i+1, (s[i]*3+s[i+1]+2)>>2)
		}
		put(2*(n-1), (s[n-1]*3+s[n-2]+1)>>2)
		put(2*(n-1)+1, s[n-1])
		return
	}
	// h2v2: s are column sums 3·near + far; bias 8 (even) / 7 (odd), shift 4
	put := func(i int, v int32) {
		if i < w {
			out[i] = uint8(v >> 4)
		}
	}
	if n == 1 {
		put(0, s[0]*4+8)
		put(1, s[0]*4+7)
		return
	}
	put(0, s[0]*4+8)
	put(1, s[0]*3+s[1]+7)
	for i := 1; i < n-1; i++ {
		put(2*i, s[i]*3+s[i-1]+8)
		put(2*i+1, s[i]*3+s[i+1]+7)
	}
	put(2*(n-1), s[n-1]*3+s[n-2]+8)
	put(2*(n-1)+1, s[n-1]*4+7)
}

// ---------------------------------------------------------------------------
// WebP colour as libwebp does it
// ---------------------------------------------------------------------------

// webpYCbCr converts a lossy WebP frame (limited-range BT.601, 4:2:0) with
// libwebp's fancy upsampler and fixed-point YUV->RGB; a is the alpha plane
// (nil when opaque).
func webpYCbCr(m *image.YCbCr, a []uint8) *Picture {
	w, h := m.Rect.Dx(), m.Rect.Dy()
	p := &Picture{W: w, H: h, Mode: ModeRGB, C: 3}
	if a != nil {
		p.Mode, p.C = ModeRGBA, 4
	}
	p.Pix = make([]uint8, w*h*p.C)
	uv := func(row, x int) uint32 {
		i := row*m.CStride + x
		return uint32(m.Cb[i]) | uint32(m.Cr[i])<<16
	}
	put := func(y, x int, uvv uint32) {
		Y := int(m.Y[y*m.YStride+x])
		u, v := int(uvv&0xff), int(uvv>>16)
		o := p.Pix[(y*w+x)*p.C:]
		o[0] = vp8Clip8(mulHi(Y, 19077) + mulHi(v, 26149) - 14234)
		o[1] = vp8Clip8(mulHi(Y, 19077) - mulHi(u, 6419) - mulHi(v, 13320) + 8708)
		o[2] = vp8Clip8(mulHi(Y, 19077) + mulHi(u, 33050) - 17685)
		if a != nil {
			o[3] = a[y*m.YStride+x]
		}
	}
	// upsample one pair of luma rows (top, bottom; bottom < 0 = none) from
	// chroma rows tu (top) and cu (current), as libwebp's UpsampleRgbLinePair.
	pair := func(top, bottom, tu, cu int) {
		tl, l := uv(tu, 0), uv(cu, 0)
		put(top, 0, (3*tl+l+0x00020002)>>2)
		if bottom >= 0 {
			put(bottom, 0, (3*l+tl+0x00020002)>>2)
		}
		last := (w - 1) >> 1
		for x := 1; x <= last; x++ {
			t, c := uv(tu, x), uv(cu, x)
			avg := tl + t + l + c + 0x00080008
			d12 := (avg + 2*(t+l)) >> 3
			d03 := (avg + 2*(tl+c)) >> 3
			put(top, 2*x-1, (d12+tl)>>1)
			put(top, 2*x, (d03+t)>>1)
			if bottom >= 0 {
				put(bottom, 2*x-1, (d03+l)>>1)
				put(bottom, 2*x, (d12+c)>>1)
			}
			tl, l = t, c
		}
		if w&1 == 0 {
			put(top, w-1, (3*tl+l+0x00020002)>>2)
			if bottom >= 0 {
				put(bottom, w-1, (3*l+tl+0x00020002)>>2)
			}
		}
	}
	pair(0, -1, 0, 0)
	for k := 1; 2*k-1 < h; k++ {
		if 2*k < h {
			pair(2*k-1, 2*k, k-1, k)
		} else {
			pair(2*k-1, -1, k-1, k-1)
		}
	}
	return p
}

func mulHi(v, c int) int { return (v * c) >> 8 }

func vp8Clip8(v int) uint8 {
	const fix2, mask2 = 6, (256 << 6) - 1
	if v&^mask2 == 0 {
		return uint8(v >> fix2)
	}
	if v < 0 {
		return 0
	}
	return 255
}
