package clip

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
)

// ---------------------------------------------------------------------------
// Protobuf wire format, just what onnx.proto needs
// ---------------------------------------------------------------------------

// pb is a protobuf message being encoded.
type pb struct{ b []byte }

func (m *pb) varint(v uint64) {
	m.b = binary.AppendUvarint(m.b, v)
}

func (m *pb) tag(field, wire int) { m.varint(uint64(field)<<3 | uint64(wire)) }

// Int writes an int64/int32/enum field (wire type 0).
func (m *pb) Int(field int, v int64) {
	m.tag(field, 0)
	m.varint(uint64(v))
}

// Bytes writes a bytes, string or embedded-message field (wire type 2).
func (m *pb) Bytes(field int, v []byte) {
	m.tag(field, 2)
	m.varint(uint64(len(v)))
	m.b = append(m.b, v...)
}

func (m *pb) Str(field int, s string) { m.Bytes(field, []byte(s)) }

func (m *pb) Msg(field int, sub *pb) { m.Bytes(field, sub.b) }

// Float writes a float field (wire type 5, little-endian fixed32).
func (m *pb) Float(field int, v float32) {
	m.tag(field, 5)
	m.b = binary.LittleEndian.AppendUint32(m.b, math.Float32bits(v))
}

// ONNX enum values (onnx.proto).
const (
	onnxFloat = 1 // TensorProto.DataType FLOAT
	onnxInt64 = 7 // TensorProto.DataType INT64

	attrFloat = 1 // AttributeProto.AttributeType
	attrInt   = 2
	attrInts  = 7
)

// ---------------------------------------------------------------------------
// Graph builder
// ---------------------------------------------------------------------------

// Attr is a node attribute: an int, a float or a list of ints.
type Attr struct {
	Name  string
	Int   int64
	Float float32
	Ints  []int64
	kind  int
}

// AInt, AFloat and AInts make attributes.
func AInt(name string, v int64) Attr     { return Attr{Name: name, Int: v, kind: attrInt} }
func AFloat(name string, v float32) Attr { return Attr{Name: name, Float: v, kind: attrFloat} }
func AInts(name string, v ...int64) Attr { return Attr{Name: name, Ints: v, kind: attrInts} }
func (a Attr) encode() *pb {
	m := &pb{}
	m.Str(1, a.Name)
	switch a.kind {
	case attrFloat:
		m.Float(2, a.Float)
	case attrInt:
		m.Int(3, a.Int)
	case attrInts:
		for _, v := range a.Ints {
			m.Int(8, v)
		}
	}
	m.Int(20, int64(a.kind))
	return m
}

// Graph is an ONNX graph under construction: nodes in topological order,
// float32 and int64 initializers, one float32 input and one float32 output
// whose shapes may name symbolic dimensions (dim < 0 is written as "N").
type Graph struct {
	Name  string
	nodes []*pb
	inits []*pb
	input struct {
		name string
		dims []int64
	}
	output struct {
		name string
		dims []int64
	}
	seq    int
	Params int64 // number of weights in initializers
}

// NewGraph starts a graph with one float32 input and one float32 output.
func NewGraph(name, input string, inDims []int64, output string, outDims []int64) *Graph {
	g := &Graph{Name: name}
	g.input.name, g.input.dims = input, inDims
	g.output.name, g.output.dims = output, outDims
	return g
}

// Node appends op(inputs) -> outputs. An output "" gets a fresh name; the
// names of the outputs are returned.
func (g *Graph) Node(op string, inputs []string, outputs []string, attrs ...Attr) []string {
	m := &pb{}
	for _, in := range inputs {
		m.Str(1, in)
	}
	for i, out := range outputs {
		if out == "" {
			g.seq++
			out = fmt.Sprintf("%s_%d", op, g.seq)
			outputs[i] = out
		}
		m.Str(2, out)
	}
	g.seq++
	m.Str(3, fmt.Sprintf("n%d_%s", g.seq, op))
	m.Str(4, op)
	for _, a := range attrs {
		m.Msg(5, a.encode())
	}
	g.nodes = append(g.nodes, m)
	return outputs
}

// Op is Node with one output of a fresh name.
func (g *Graph) Op(op string, inputs []string, attrs ...Attr) string {
	return g.Node(op, inputs, []string{""}, attrs...)[0]
}

// Float32 adds a float32 initializer of the given shape (raw_data).
func (g *Graph) Float32(name string, dims []int64, data []float32) string {
	m := &pb{}
	for _, d := range dims {
		m.Int(1, d)
	}
	m.Int(2, onnxFloat)
	m.Str(8, name)
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	m.Bytes(9, raw)
	g.inits = append(g.inits, m)
	g.Params += int64(len(data))
	return name
}

// Int64 adds an int64 initializer (a 1-d shape vector, an axes list).
func (g *Graph) Int64(name string, data ...int64) string {
	m := &pb{}
	m.Int(1, int64(len(data)))
	m.Int(2, onnxInt64)
	m.Str(8, name)
	raw := make([]byte, 8*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(v))
	}
	m.Bytes(9, raw)
	g.inits = append(g.inits, m)
	return name
}

func valueInfo(name string, dims []int64) *pb {
	shape := &pb{}
	for _, d := range dims {
		dim := &pb{}
		if d < 0 {
			dim.Str(2, "N")
		} else {
			dim.Int(1, d)
		}
		shape.Msg(1, dim)
	}
	tensor := &pb{}
	tensor.Int(1, onnxFloat)
	tensor.Msg(2, shape)
	typ := &pb{}
	typ.Msg(1, tensor)
	vi := &pb{}
	vi.Str(1, name)
	vi.Msg(2, typ)
	return vi
}

// Opset is the ONNX operator set the models are written for (ir_version 8).
const Opset = 17

// Model encodes the ModelProto.
func (g *Graph) Model() []byte {
	graph := &pb{}
	for _, n := range g.nodes {
		graph.Msg(1, n)
	}
	graph.Str(2, g.Name)
	for _, t := range g.inits {
		graph.Msg(5, t)
	}
	graph.Msg(11, valueInfo(g.input.name, g.input.dims))
	graph.Msg(12, valueInfo(g.output.name, g.output.dims))
	opset := &pb{}
	opset.Str(1, "")
	opset.Int(2, Opset)
	model := &pb{}
	model.Int(1, 8) // ir_version
	model.Str(2, "hpcrun")
	model.Str(3, "1")
	model.Msg(7, graph)
	model.Msg(8, opset)
	return model.b
}

// ---------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------

// Tiny describes TinyEncoder: image [N,3,Size,Size] -> AveragePool over a
// Grid x Grid lattice of (Size/Grid)² cells -> Flatten [N, 3·Grid²] ->
// MatMul W [3·Grid², Dim] -> Add B [Dim] -> embedding [N, Dim].
// Size must be a multiple of Grid.
type Tiny struct {
	Size, Grid, Dim int
	W               []float32 // [3·Grid², Dim] row-major; nil = seeded N(0, 1/(3·Grid²))
	B               []float32 // [Dim]; nil = zeros
	Seed            uint64
}

// Features is the length of the pooled feature vector, 3·Grid².
func (t Tiny) Features() int { return 3 * t.Grid * t.Grid }

// Weights returns W and B, generating the seeded ones when unset.
func (t Tiny) Weights() (w, b []float32) {
	k := t.Features()
	w, b = t.W, t.B
	if w == nil {
		rng := rand.New(rand.NewPCG(t.Seed, 0x7a11))
		w = make([]float32, k*t.Dim)
		s := 1 / math.Sqrt(float64(k))
		for i := range w {
			w[i] = float32(rng.NormFloat64() * s)
		}
	}
	if b == nil {
		b = make([]float32, t.Dim)
	}
	return w, b
}

// TinyEncoder writes the Tiny model. Input "image", output "embedding".
func TinyEncoder(t Tiny) ([]byte, error) {
	if t.Grid < 1 || t.Size < t.Grid || t.Size%t.Grid != 0 || t.Dim < 1 {
		return nil, fmt.Errorf("clip: TinyEncoder: size %d must be a positive multiple of grid %d, dim %d positive", t.Size, t.Grid, t.Dim)
	}
	w, b := t.Weights()
	k := t.Features()
	if len(w) != k*t.Dim || len(b) != t.Dim {
		return nil, fmt.Errorf("clip: TinyEncoder: W has %d values, want %d; B has %d, want %d", len(w), k*t.Dim, len(b), t.Dim)
	}
	s := int64(t.Size)
	g := NewGraph("clip_tiny_visual", "image", []int64{-1, 3, s, s}, "embedding", []int64{-1, int64(t.Dim)})
	cell := int64(t.Size / t.Grid)
	x := g.Op("AveragePool", []string{"image"}, AInts("kernel_shape", cell, cell), AInts("strides", cell, cell))
	x = g.Op("Flatten", []string{x}, AInt("axis", 1))
	x = g.Op("MatMul", []string{x, g.Float32("W", []int64{int64(k), int64(t.Dim)}, w)})
	g.Node("Add", []string{x, g.Float32("B", []int64{int64(t.Dim)}, b)}, []string{"embedding"})
	return g.Model(), nil
}

// TinyForward is the plain reference of TinyEncoder: x [n,3,Size,Size] ->
// [n,Dim], accumulated in float64.
func TinyForward(t Tiny, x []float32, n int) []float32 {
	w, b := t.Weights()
	k, s, c := t.Features(), t.Size, t.Size/t.Grid
	out := make([]float32, n*t.Dim)
	f := make([]float64, k)
	for i := 0; i < n; i++ {
		img := x[i*3*s*s : (i+1)*3*s*s]
		for ch := 0; ch < 3; ch++ {
			for gy := 0; gy < t.Grid; gy++ {
				for gx := 0; gx < t.Grid; gx++ {
					var sum float64
					for y := gy * c; y < (gy+1)*c; y++ {
						for xx := gx * c; xx < (gx+1)*c; xx++ {
							sum += float64(img[ch*s*s+y*s+xx])
						}
					}
					f[ch*t.Grid*t.Grid+gy*t.Grid+gx] = sum / float64(c*c)
				}
			}
		}
		for d := 0; d < t.Dim; d++ {
			acc := float64(b[d])
			for j := 0; j < k; j++ {
				acc += f[j] * float64(w[j*t.Dim+d])
			}
			out[i*t.Dim+d] = float32(acc)
		}
	}
	return out
}

// ViT describes ViTEncoder, shaped like open_clip's ViT-B/32 visual tower
// (Size 224, Patch 32, Width 768, Layers 12, Heads 12, Dim 512 gives about
// 4.4 GMAC per image): patch Conv -> Layers pre-norm transformer blocks
// (multi-head self-attention and a 4x GELU MLP) -> mean over tokens ->
// LayerNorm -> projection. Weights are seeded N(0, 0.02²); it is a
// benchmark load with CLIP's shapes and op mix, not a trained model.
type ViT struct {
	Size, Patch, Width, Layers, Heads, Dim int
	Seed                                   uint64
}

// ViTB32 is the ViT-B/32 shape.
var ViTB32 = ViT{Size: 224, Patch: 32, Width: 768, Layers: 12, Heads: 12, Dim: 512}

// FLOPs is the multiply-adds x 2 of one image.
func (v ViT) FLOPs() float64 {
	t := float64((v.Size / v.Patch) * (v.Size / v.Patch))
	w := float64(v.Width)
	patch := t * 3 * float64(v.Patch*v.Patch) * w
	layer := t*w*3*w + 2*t*t*w + t*w*w + 2*t*w*4*w
	return 2 * (patch + float64(v.Layers)*layer + w*float64(v.Dim))
}

// ViTEncoder writes the ViT model. Input "image", output "embedding".
func ViTEncoder(v ViT) ([]byte, error) {
	if v.Patch < 1 || v.Size%v.Patch != 0 || v.Heads < 1 || v.Width%v.Heads != 0 || v.Layers < 0 || v.Dim < 1 {
		return nil, fmt.Errorf("clip: ViTEncoder: bad shape %+v", v)
	}
	rng := rand.New(rand.NewPCG(v.Seed, 0x1717))
	normal := func(n int, s float64) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * s)
		}
		return x
	}
	fill := func(n int, c float32) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = c
		}
		return x
	}
	s, p, w, h := int64(v.Size), int64(v.Patch), int64(v.Width), int64(v.Heads)
	tok := (s / p) * (s / p)
	dh := w / h
	g := NewGraph("clip_vit_visual", "image", []int64{-1, 3, s, s}, "embedding", []int64{-1, int64(v.Dim)})
	name := func(l int, what string) string { return fmt.Sprintf("l%d.%s", l, what) }
	ln := func(x, prefix string) string {
		return g.Op("LayerNormalization", []string{x, g.Float32(prefix+".g", []int64{w}, fill(int(w), 1)), g.Float32(prefix+".b", []int64{w}, fill(int(w), 0))},
			AInt("axis", -1), AFloat("epsilon", 1e-5))
	}
	lin := func(x, prefix string, in, out int64) string {
		y := g.Op("MatMul", []string{x, g.Float32(prefix+".w", []int64{in, out}, normal(int(in*out), 0.02))})
		return g.Op("Add", []string{y, g.Float32(prefix+".b", []int64{out}, fill(int(out), 0))})
	}
	x := g.Op("Conv", []string{"image", g.Float32("patch.w", []int64{w, 3, p, p}, normal(int(w*3*p*p), 0.02))},
		AInts("kernel_shape", p, p), AInts("strides", p, p))
	x = g.Op("Reshape", []string{x, g.Int64("shape.nct", 0, w, tok)})
	x = g.Op("Transpose", []string{x}, AInts("perm", 0, 2, 1)) // [N, T, W]
	x = g.Op("Add", []string{x, g.Float32("pos", []int64{tok, w}, normal(int(tok*w), 0.02))})
	x = ln(x, "ln_pre")
	heads := g.Int64("shape.nthd", 0, tok, h, dh)
	merge := g.Int64("shape.ntw", 0, tok, w)
	scale := g.Float32("attn.scale", nil, []float32{float32(1 / math.Sqrt(float64(dh)))})
	half := g.Float32("gelu.half", nil, []float32{0.5})
	one := g.Float32("gelu.one", nil, []float32{1})
	rsqrt2 := g.Float32("gelu.rsqrt2", nil, []float32{float32(1 / math.Sqrt2)})
	for l := 0; l < v.Layers; l++ {
		// attention
		y := ln(x, name(l, "ln1"))
		split := func(what string, perm ...int64) string {
			z := lin(y, name(l, what), w, w)
			z = g.Op("Reshape", []string{z, heads}) // [N, T, H, dh]
			return g.Op("Transpose", []string{z}, AInts("perm", perm...))
		}
		q := split("q", 0, 2, 1, 3) // [N, H, T, dh]
		k := split("k", 0, 2, 3, 1) // [N, H, dh, T]
		vv := split("v", 0, 2, 1, 3)
		a := g.Op("MatMul", []string{q, k})
		a = g.Op("Mul", []string{a, scale})
		a = g.Op("Softmax", []string{a}, AInt("axis", -1))
		a = g.Op("MatMul", []string{a, vv})                           // [N, H, T, dh]
		a = g.Op("Transpose", []string{a}, AInts("perm", 0, 2, 1, 3)) // [N, T, H, dh]
		a = g.Op("Reshape", []string{a, merge})
		a = lin(a, name(l, "o"), w, w)
		x = g.Op("Add", []string{x, a})
		// MLP with exact GELU: 0.5·z·(1 + erf(z/√2))
		y = ln(x, name(l, "ln2"))
		z := lin(y, name(l, "fc"), w, 4*w)
		e := g.Op("Erf", []string{g.Op("Mul", []string{z, rsqrt2})})
		z = g.Op("Mul", []string{g.Op("Mul", []string{z, half}), g.Op("Add", []string{e, one})})
		z = lin(z, name(l, "proj"), 4*w, w)
		x = g.Op("Add", []string{x, z})
	}
	x = g.Op("ReduceMean", []string{x}, AInts("axes", 1), AInt("keepdims", 0)) // [N, W]
	x = ln(x, "ln_post")
	g.Node("MatMul", []string{x, g.Float32("proj", []int64{w, int64(v.Dim)}, normal(int(w)*v.Dim, 1/math.Sqrt(float64(w))))}, []string{"embedding"})
	return g.Model(), nil
}
