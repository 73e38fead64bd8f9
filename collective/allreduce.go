package collective

import (
	"context"
	"fmt"
	"unsafe"
)

// Number is an element type Allreduce can combine.
type Number interface {
	~float32 | ~float64 | ~int32 | ~int64
}

// Op is a reduction operator.
type Op int

const (
	Sum Op = iota
	Max
	Min
)

func (op Op) String() string {
	switch op {
	case Sum:
		return "sum"
	case Max:
		return "max"
	case Min:
		return "min"
	}
	return fmt.Sprintf("Op(%d)", int(op))
}

// Allreduce combines buf element-wise over all ranks with op and leaves
// the result in every rank's buf. All ranks must pass buffers of the same
// length.
//
// The result is bitwise identical on every rank and from run to run: each
// element is combined in an order fixed by the rank count and the buffer
// length, never by message arrival. (Floating-point sums of the same
// values in another order, or on another rank count, may differ in the
// last bits.)
//
// Buffers up to 64 KiB are sent to every rank and folded in rank order
// 0, 1, ..., Size-1. Larger ones use the bandwidth-optimal ring: a
// reduce-scatter, after which rank r holds the fold of segment r+1 in ring
// order starting at rank r+1, then an allgather of the reduced segments.
// Each rank sends and receives 2(n-1)/n of the buffer.
//
// Elements travel in the host's byte order: all ranks must share it.
func Allreduce[T Number](ctx context.Context, c *Comm, buf []T, op Op) error {
	return c.run("allreduce", func(seq uint64) error {
		if op != Sum && op != Max && op != Min {
			return fmt.Errorf("unknown reduction %v", op)
		}
		var zero T
		switch {
		case c.size == 1:
			return nil
		case len(buf)*int(unsafe.Sizeof(zero)) <= c.smallReduce || len(buf) < c.size:
			return allreduceDirect(ctx, c, seq, buf, op)
		default:
			return allreduceRing(ctx, c, seq, buf, op)
		}
	})
}

// allreduceDirect sends buf to every rank and folds all buffers in rank
// order, so that every rank computes the same thing.
func allreduceDirect[T Number](ctx context.Context, c *Comm, seq uint64, buf []T, op Op) error {
	parts, err := c.allgather(ctx, seq, 0, asBytes(buf))
	if err != nil {
		return err
	}
	vals := make([][]T, c.size)
	for i, p := range parts {
		if vals[i], err = fromBytes[T](p, len(buf), i); err != nil {
			return err
		}
	}
	copy(buf, vals[0])
	for i := 1; i < c.size; i++ {
		combine(buf, buf, vals[i], op)
	}
	return nil
}

// allreduceRing is the ring reduce-scatter followed by the ring allgather.
// Segment k is buf[len*k/n : len*(k+1)/n].
func allreduceRing[T Number](ctx context.Context, c *Comm, seq uint64, buf []T, op Op) error {
	n := c.size
	next, prev := c.peer(1), c.peer(-1)
	seg := func(k int) []T {
		k = ((k % n) + n) % n
		return buf[len(buf)*k/n : len(buf)*(k+1)/n]
	}
	// Reduce-scatter: in step s rank r passes on its partial of segment
	// r-s and folds its own values into the partial of segment r-s-1 that
	// arrives from r-1. Segment k starts at rank k, so after n-1 steps rank
	// r holds segment r+1 folded in ring order k, k+1, ..., k-1.
	in := make([]T, len(buf)/n+1) // the longest segment
	for s := 0; s < n-1; s++ {
		if err := c.send(ctx, next, seq, s, asBytes(seg(c.rank-s))); err != nil {
			return err
		}
		mine := seg(c.rank - s - 1)
		if err := c.recvExact(ctx, prev, seq, s, asBytes(in[:len(mine)])); err != nil {
			return err
		}
		combine(mine, in, mine, op)
	}
	// Allgather: in step s rank r passes on the finished segment r+1-s and
	// receives segment r-s in place.
	for s := 0; s < n-1; s++ {
		step := n - 1 + s
		if err := c.send(ctx, next, seq, step, asBytes(seg(c.rank+1-s))); err != nil {
			return err
		}
		if err := c.recvExact(ctx, prev, seq, step, asBytes(seg(c.rank-s))); err != nil {
			return err
		}
	}
	return nil
}

// combine sets dst[i] = a[i] op b[i], where a is the partial result so far
// and b the next contribution (dst may alias either).
func combine[T Number](dst, a, b []T, op Op) {
	a, b = a[:len(dst)], b[:len(dst)]
	switch op {
	case Sum:
		for i := range dst {
			dst[i] = a[i] + b[i]
		}
	case Max:
		for i := range dst {
			x := a[i]
			if b[i] > x {
				x = b[i]
			}
			dst[i] = x
		}
	case Min:
		for i := range dst {
			x := a[i]
			if b[i] < x {
				x = b[i]
			}
			dst[i] = x
		}
	}
}

// asBytes views s as bytes (host byte order), without copying.
func asBytes[T Number](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*int(unsafe.Sizeof(s[0])))
}

// fromBytes views b, received from rank from, as want elements of T; it
// copies only if b is not aligned for T.
func fromBytes[T Number](b []byte, want int, from int) ([]T, error) {
	var zero T
	size := int(unsafe.Sizeof(zero))
	if len(b) != want*size {
		return nil, fmt.Errorf("rank %d sent %d bytes, want %d elements of %d bytes (buffers of different lengths?)",
			from, len(b), want, size)
	}
	if want == 0 {
		return nil, nil
	}
	if uintptr(unsafe.Pointer(unsafe.SliceData(b)))%unsafe.Alignof(zero) == 0 {
		return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), want), nil
	}
	out := make([]T, want)
	copy(asBytes(out), b)
	return out, nil
}

// AsBytes views a numeric slice as its bytes in host order, without
// copying, e.g. to Bcast or Allgather a []float32.
func AsBytes[T Number](s []T) []byte { return asBytes(s) }

// FromBytes copies b (host byte order, as made by AsBytes) into a new []T.
// len(b) must be a multiple of the element size.
func FromBytes[T Number](b []byte) ([]T, error) {
	var zero T
	size := int(unsafe.Sizeof(zero))
	if len(b)%size != 0 {
		return nil, fmt.Errorf("collective: %d bytes is not a whole number of %d-byte elements", len(b), size)
	}
	out := make([]T, len(b)/size)
	copy(asBytes(out), b)
	return out, nil
}
