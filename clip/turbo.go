//go:build linux && (amd64 || arm64)

package clip

import (
	"fmt"
	"os"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// JPEG decoding through libjpeg-turbo's TurboJPEG API (libturbojpeg.so.0,
// Debian's libturbojpeg0), bound at run time with purego: the library PIL
// itself decodes with, so YCbCr and greyscale JPEGs come out exactly as
// Image.open gives them (accurate integer IDCT, fancy upsampling), about
// 4x faster than image/jpeg. CMYK/YCCK JPEGs, machines without the library,
// and HPCRUN_JPEG=go use the Go decoder (image.go).

// JPEGEnv names the environment variable that, set to "go", makes Decode
// use Go's image/jpeg even when libjpeg-turbo is present.
const JPEGEnv = "HPCRUN_JPEG"

const (
	tjcsGray  = 2 // TJCS_GRAY
	tjcsCMYK  = 3 // TJCS_CMYK
	tjcsYCCK  = 4 // TJCS_YCCK
	tjpfRGB   = 0 // TJPF_RGB
	tjpfGray  = 6 // TJPF_GRAY
	turboName = "libturbojpeg.so.0"
)

var turbo struct {
	once              sync.Once
	err               error
	initDecompress    func() uintptr
	decompressHeader3 func(h uintptr, buf *byte, size uint64, w, ht, subsamp, cs *int32) int32
	decompress2       func(h uintptr, buf *byte, size uint64, dst *byte, w, pitch, ht, pf, flags int32) int32
	destroy           func(h uintptr) int32
	errStr2           func(h uintptr) string
	// idle decompressor handles (a sync.Pool would drop them at GC without
	// tjDestroy: a leak); beyond its capacity a handle is destroyed
	handles chan uintptr
}

func loadTurbo() error {
	turbo.once.Do(func() {
		turbo.handles = make(chan uintptr, 64)
		lib, err := purego.Dlopen(turboName, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			turbo.err = fmt.Errorf("%s not found (%v)", turboName, err)
			return
		}
		for _, b := range []struct {
			fn   any
			name string
		}{
			{&turbo.initDecompress, "tjInitDecompress"},
			{&turbo.decompressHeader3, "tjDecompressHeader3"},
			{&turbo.decompress2, "tjDecompress2"},
			{&turbo.destroy, "tjDestroy"},
			{&turbo.errStr2, "tjGetErrorStr2"},
		} {
			sym, err := purego.Dlsym(lib, b.name)
			if err != nil || sym == 0 {
				turbo.err = fmt.Errorf("%s has no %s", turboName, b.name)
				return
			}
			purego.RegisterFunc(b.fn, sym)
		}
	})
	return turbo.err
}

// JPEGDecoder names the decoder Decode uses for YCbCr and greyscale JPEGs:
// "libjpeg-turbo" or "go (reason)".
func JPEGDecoder() string {
	if os.Getenv(JPEGEnv) == "go" {
		return "go (" + JPEGEnv + "=go)"
	}
	if err := loadTurbo(); err != nil {
		return "go (" + err.Error() + ")"
	}
	return "libjpeg-turbo"
}

// decodeTurbo decodes a JPEG with libjpeg-turbo; ok is false when the Go
// decoder must do it instead (no library, HPCRUN_JPEG=go, CMYK/YCCK).
func decodeTurbo(data []byte) (p *Picture, err error, ok bool) {
	if os.Getenv(JPEGEnv) == "go" || loadTurbo() != nil {
		return nil, nil, false
	}
	var h uintptr
	select {
	case h = <-turbo.handles:
	default:
		if h = turbo.initDecompress(); h == 0 {
			return nil, nil, false
		}
	}
	defer func() {
		select {
		case turbo.handles <- h:
		default:
			turbo.destroy(h)
		}
	}()
	var w, ht, sub, cs int32
	if turbo.decompressHeader3(h, &data[0], uint64(len(data)), &w, &ht, &sub, &cs) != 0 {
		return nil, fmt.Errorf("jpeg: %s", turbo.errStr2(h)), true
	}
	if cs == tjcsCMYK || cs == tjcsYCCK {
		return nil, nil, false
	}
	if w < 1 || ht < 1 || int64(w)*int64(ht) > 1<<28 {
		return nil, fmt.Errorf("jpeg: %dx%d pixels", w, ht), true
	}
	p = &Picture{W: int(w), H: int(ht), Mode: ModeRGB, C: 3, Format: "jpeg"}
	pf := int32(tjpfRGB)
	if cs == tjcsGray {
		p.Mode, p.C, pf = ModeL, 1, tjpfGray
	}
	p.Pix = make([]uint8, p.W*p.H*p.C)
	if turbo.decompress2(h, &data[0], uint64(len(data)), unsafe.SliceData(p.Pix), w, int32(p.W*p.C), ht, pf, 0) != 0 {
		// warnings too (e.g. "Premature end of JPEG file"): PIL refuses a
		// truncated image as well
		return nil, fmt.Errorf("jpeg: %s", turbo.errStr2(h)), true
	}
	return p, nil, true
}
