// Package ort runs ONNX image encoders with ONNX Runtime through
// github.com/yalue/onnxruntime_go (cgo; the library itself is loaded at run
// time from FindLibrary's path, so building needs no ONNX Runtime).
package ort

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	ortgo "github.com/yalue/onnxruntime_go"
)

// LibEnv names the environment variable that points at libonnxruntime.
const LibEnv = "HPCRUN_ORT_LIB"

// libRel is where `make deps` puts the library, relative to the repo root.
var libRel = filepath.Join("third_party", "onnxruntime", "libonnxruntime.so.1")

// FindLibrary returns the ONNX Runtime shared library to load: $HPCRUN_ORT_LIB
// when set (an error if it does not exist); else the first
// third_party/onnxruntime/libonnxruntime.so.1 found in the executable's
// folder or one of its parents (bin/hpcrun finds the repo's copy), then in
// the current folder or one of its parents (go test runs in the package
// folder).
func FindLibrary() (string, error) {
	if p := os.Getenv(LibEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", LibEnv, p, err)
		}
		return p, nil
	}
	var starts []string
	if exe, err := os.Executable(); err == nil {
		if r, err := filepath.EvalSymlinks(exe); err == nil {
			exe = r
		}
		starts = append(starts, filepath.Dir(exe))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	var tried []string
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			p := filepath.Join(d, libRel)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			if len(tried) < 4 {
				tried = append(tried, p)
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", fmt.Errorf("ONNX Runtime library not found: set %s or run `make deps` (looked for %s above %v)", LibEnv, libRel, starts)
}

var ortInit struct {
	once sync.Once
	path string
	err  error
}

// Init loads ONNX Runtime once per process (FindLibrary) and returns the
// library's path; later calls return the first result.
func Init() (string, error) {
	ortInit.once.Do(func() {
		p, err := FindLibrary()
		if err != nil {
			ortInit.err = err
			return
		}
		ortgo.SetSharedLibraryPath(p)
		if err := ortgo.InitializeEnvironment(ortgo.WithLogLevelError()); err != nil {
			ortInit.err = fmt.Errorf("loading ONNX Runtime %s: %w", p, err)
			return
		}
		ortInit.path = p
	})
	return ortInit.path, ortInit.err
}

// Version is the loaded ONNX Runtime's version ("" before Init).
func Version() string {
	if ortInit.path == "" {
		return ""
	}
	return ortgo.GetVersion()
}

// SessionOptions choose the execution provider and threads.
type SessionOptions struct {
	Backend  string // auto | cpu | cuda
	Threads  int    // intra-op threads; 0 = ONNX Runtime's default
	DeviceID int    // CUDA device
	// Size fixes the image side when the model's input is dynamic.
	Size int
	// Note receives one line when auto falls back to CPU.
	Note func(msg string)
}

// ErrNoCUDA marks a cuda backend that ONNX Runtime cannot provide.
var ErrNoCUDA = errors.New("the ONNX Runtime CUDA execution provider is not available")

// Session runs an image encoder: [n,3,Size,Size] float32 -> [n,Dim] float32.
type Session struct {
	Model    string
	Provider string // CPU or CUDA
	Size     int
	Dim      int
	s        *ortgo.DynamicAdvancedSession
	in, out  string
}

// NewSession opens model. Backend cuda appends the CUDA execution provider
// and fails with ErrNoCUDA when it cannot; auto tries CUDA and falls back to
// CPU with a Note; cpu never tries CUDA.
func NewSession(model string, o SessionOptions) (*Session, error) {
	if _, err := Init(); err != nil {
		return nil, err
	}
	ins, outs, err := ortgo.GetInputOutputInfo(model)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", model, err)
	}
	if len(ins) != 1 || len(outs) < 1 {
		return nil, fmt.Errorf("model %s: want one image input and an embedding output, got %d inputs and %d outputs", model, len(ins), len(outs))
	}
	in, out := ins[0], outs[0]
	if in.DataType != ortgo.TensorElementDataTypeFloat || len(in.Dimensions) != 4 || (in.Dimensions[1] != 3 && in.Dimensions[1] > 0) {
		return nil, fmt.Errorf("model %s: input %q must be float32 [N,3,H,W], got %s %v", model, in.Name, in.DataType, in.Dimensions)
	}
	if out.DataType != ortgo.TensorElementDataTypeFloat || len(out.Dimensions) != 2 || out.Dimensions[1] < 1 {
		return nil, fmt.Errorf("model %s: output %q must be float32 [N,D] with D fixed, got %s %v", model, out.Name, out.DataType, out.Dimensions)
	}
	size := o.Size
	h, w := in.Dimensions[2], in.Dimensions[3]
	if h > 0 || w > 0 {
		if h != w {
			return nil, fmt.Errorf("model %s: input %q is %dx%d; only square inputs are supported", model, in.Name, h, w)
		}
		if size != 0 && int64(size) != h {
			return nil, fmt.Errorf("model %s takes %dx%d images but image_size is %d", model, h, w, size)
		}
		size = int(h)
	}
	if size < 1 {
		return nil, fmt.Errorf("model %s: input %q has dynamic height and width; set image_size", model, in.Name)
	}
	s := &Session{Model: model, Size: size, Dim: int(out.Dimensions[1]), in: in.Name, out: out.Name}
	open := func(cuda bool) error {
		opts, err := ortgo.NewSessionOptions()
		if err != nil {
			return err
		}
		defer opts.Destroy()
		if o.Threads > 0 {
			if err := opts.SetIntraOpNumThreads(o.Threads); err != nil {
				return err
			}
			if err := opts.SetInterOpNumThreads(1); err != nil {
				return err
			}
		}
		// Idle ORT threads would spin-wait for the next batch, taking the
		// cores the decode workers need between batches.
		if err := opts.AddSessionConfigEntry("session.intra_op.allow_spinning", "0"); err != nil {
			return err
		}
		if cuda {
			co, err := ortgo.NewCUDAProviderOptions()
			if err != nil {
				return fmt.Errorf("%w: %v", ErrNoCUDA, err)
			}
			defer co.Destroy()
			if err := co.Update(map[string]string{"device_id": fmt.Sprint(o.DeviceID)}); err != nil {
				return fmt.Errorf("%w: %v", ErrNoCUDA, err)
			}
			if err := opts.AppendExecutionProviderCUDA(co); err != nil {
				return fmt.Errorf("%w: %v", ErrNoCUDA, err)
			}
		}
		sess, err := ortgo.NewDynamicAdvancedSession(model, []string{s.in}, []string{s.out}, opts)
		if err != nil {
			if cuda {
				return fmt.Errorf("%w: %v", ErrNoCUDA, err)
			}
			return fmt.Errorf("model %s: %w", model, err)
		}
		s.s = sess
		return nil
	}
	switch o.Backend {
	case "cuda":
		if err := open(true); err != nil {
			return nil, fmt.Errorf("runtime.backend = \"cuda\": %w", err)
		}
		s.Provider = "CUDA"
	case "auto":
		if err := open(true); err != nil {
			if o.Note != nil {
				o.Note(fmt.Sprintf("runtime.backend = \"auto\": %s; using the CPU", shortReason(err)))
			}
			if err := open(false); err != nil {
				return nil, err
			}
			s.Provider = "CPU"
		} else {
			s.Provider = "CUDA"
		}
	case "cpu", "":
		if err := open(false); err != nil {
			return nil, err
		}
		s.Provider = "CPU"
	default:
		return nil, fmt.Errorf("unknown backend %q (auto, cpu, cuda)", o.Backend)
	}
	return s, nil
}

// Run encodes n images x [n,3,Size,Size] into out [n,Dim] (allocated when
// out is too short) and returns out.
func (s *Session) Run(x []float32, n int, out []float32) ([]float32, error) {
	if len(x) < n*3*s.Size*s.Size {
		return nil, fmt.Errorf("clip: Run: %d values for %d images of %dx%d", len(x), n, s.Size, s.Size)
	}
	if len(out) < n*s.Dim {
		out = make([]float32, n*s.Dim)
	}
	if n == 0 {
		return out[:0], nil
	}
	in, err := ortgo.NewTensor(ortgo.NewShape(int64(n), 3, int64(s.Size), int64(s.Size)), x)
	if err != nil {
		return nil, err
	}
	defer in.Destroy()
	o, err := ortgo.NewTensor(ortgo.NewShape(int64(n), int64(s.Dim)), out)
	if err != nil {
		return nil, err
	}
	defer o.Destroy()
	if err := s.s.Run([]ortgo.Value{in}, []ortgo.Value{o}); err != nil {
		return nil, fmt.Errorf("model %s: %w", s.Model, err)
	}
	return out[:n*s.Dim], nil
}

// Close frees the session.
func (s *Session) Close() error {
	if s.s == nil {
		return nil
	}
	err := s.s.Destroy()
	s.s = nil
	return err
}

// shortReason trims ONNX Runtime's source-location preamble from an error
// for a one-line log ("...ProviderLibrary::Get() [ONNXRuntimeError] : 1 :
// FAIL : Failed to load library X" -> "... not available: Failed to load
// library X").
func shortReason(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, " : "); i >= 0 && errors.Is(err, ErrNoCUDA) {
		reason := strings.TrimSpace(msg[i+3:])
		// "Failed to load library /x/libonnxruntime_providers_shared.so with error: ...": the file name says it
		if j := strings.Index(reason, " with error:"); j >= 0 {
			reason = reason[:j]
		}
		return ErrNoCUDA.Error() + ": " + reason
	}
	return msg
}
