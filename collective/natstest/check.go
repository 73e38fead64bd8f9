package natstest

import (
	"bytes"
	"context"
	"fmt"

	"hpcrun/collective"
)

// CheckAll runs every collective on c for each size in sizes (bytes for
// the byte-level operations, elements for Allreduce) and compares the
// results with a plain serial computation. Every rank of the job must
// call it with the same sizes. Inputs are fixed functions of (rank,
// index), so each rank can compute what every other rank holds; values
// are chosen so that floating-point sums are exact and the serial result
// is the only right answer, bit for bit.
func CheckAll(ctx context.Context, c *collective.Comm, sizes []int) error {
	if err := c.Barrier(ctx); err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	for _, s := range sizes {
		for _, check := range []struct {
			name string
			f    func(context.Context, *collective.Comm, int) error
		}{
			{"bcast", checkBcast},
			{"scatterv", checkScatterv},
			{"scatter", checkScatter},
			{"gatherv", checkGatherv},
			{"gather", checkGather},
			{"allgatherv", checkAllgatherv},
			{"allgather", checkAllgather},
			{"alltoallv", checkAlltoallv},
			{"alltoall", checkAlltoall},
			{"allreduce", checkAllreduceAll},
			{"barrier", func(ctx context.Context, c *collective.Comm, _ int) error { return c.Barrier(ctx) }},
		} {
			if err := check.f(ctx, c, s); err != nil {
				return fmt.Errorf("rank %d of %d: %s, size %d: %w", c.Rank(), c.Size(), check.name, s, err)
			}
		}
	}
	return nil
}

// Bytes is the test input of rank r: n bytes, a function of (r, salt, i).
func Bytes(r, salt, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r*131 + salt*17 + i*7 + i>>8 + 1)
	}
	return b
}

func same(got, want []byte) error {
	if bytes.Equal(got, want) {
		return nil
	}
	if len(got) != len(want) {
		return fmt.Errorf("got %d bytes, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Errorf("byte %d = %d, want %d", i, got[i], want[i])
		}
	}
	return nil
}

func checkBcast(ctx context.Context, c *collective.Comm, s int) error {
	root := s % c.Size()
	var in []byte
	if c.Rank() == root {
		in = Bytes(root, 1, s)
	}
	got, err := c.Bcast(ctx, root, in)
	if err != nil {
		return err
	}
	return same(got, Bytes(root, 1, s))
}

func checkScatterv(ctx context.Context, c *collective.Comm, s int) error {
	root := (s + 1) % c.Size()
	var parts [][]byte
	if c.Rank() == root {
		for i := range c.Size() {
			parts = append(parts, Bytes(i, 2, s+i)) // lengths differ
		}
	}
	got, err := c.Scatterv(ctx, root, parts)
	if err != nil {
		return err
	}
	return same(got, Bytes(c.Rank(), 2, s+c.Rank()))
}

func checkScatter(ctx context.Context, c *collective.Comm, s int) error {
	root := c.Size() - 1
	var send []byte
	if c.Rank() == root {
		for i := range c.Size() {
			send = append(send, Bytes(i, 3, s)...)
		}
	}
	recv := make([]byte, s)
	if err := c.Scatter(ctx, root, send, recv); err != nil {
		return err
	}
	return same(recv, Bytes(c.Rank(), 3, s))
}

func checkGatherv(ctx context.Context, c *collective.Comm, s int) error {
	root := s % c.Size()
	got, err := c.Gatherv(ctx, root, Bytes(c.Rank(), 4, s+2*c.Rank()))
	if err != nil {
		return err
	}
	if c.Rank() != root {
		if got != nil {
			return fmt.Errorf("non-root got %d parts", len(got))
		}
		return nil
	}
	if len(got) != c.Size() {
		return fmt.Errorf("got %d parts", len(got))
	}
	for i, p := range got {
		if err := same(p, Bytes(i, 4, s+2*i)); err != nil {
			return fmt.Errorf("part %d: %w", i, err)
		}
	}
	return nil
}

func checkGather(ctx context.Context, c *collective.Comm, s int) error {
	root := 0
	var recv []byte
	if c.Rank() == root {
		recv = make([]byte, c.Size()*s)
	}
	if err := c.Gather(ctx, root, Bytes(c.Rank(), 5, s), recv); err != nil {
		return err
	}
	if c.Rank() != root {
		return nil
	}
	var want []byte
	for i := range c.Size() {
		want = append(want, Bytes(i, 5, s)...)
	}
	return same(recv, want)
}

func checkAllgatherv(ctx context.Context, c *collective.Comm, s int) error {
	got, err := c.Allgatherv(ctx, Bytes(c.Rank(), 6, s+c.Rank()%2))
	if err != nil {
		return err
	}
	if len(got) != c.Size() {
		return fmt.Errorf("got %d parts", len(got))
	}
	for i, p := range got {
		if err := same(p, Bytes(i, 6, s+i%2)); err != nil {
			return fmt.Errorf("part %d: %w", i, err)
		}
	}
	return nil
}

func checkAllgather(ctx context.Context, c *collective.Comm, s int) error {
	recv := make([]byte, c.Size()*s)
	if err := c.Allgather(ctx, Bytes(c.Rank(), 7, s), recv); err != nil {
		return err
	}
	var want []byte
	for i := range c.Size() {
		want = append(want, Bytes(i, 7, s)...)
	}
	return same(recv, want)
}

func checkAlltoallv(ctx context.Context, c *collective.Comm, s int) error {
	parts := make([][]byte, c.Size())
	for j := range parts {
		parts[j] = Bytes(c.Rank(), 8+j, s+j) // from me to j
	}
	got, err := c.Alltoallv(ctx, parts)
	if err != nil {
		return err
	}
	for i, p := range got {
		if err := same(p, Bytes(i, 8+c.Rank(), s+c.Rank())); err != nil {
			return fmt.Errorf("from rank %d: %w", i, err)
		}
	}
	return nil
}

func checkAlltoall(ctx context.Context, c *collective.Comm, s int) error {
	counts := make([]int64, c.Size())
	for j := range counts {
		counts[j] = int64(c.Rank()*1000+j) - int64(s)<<33
	}
	got, err := c.Alltoall(ctx, counts)
	if err != nil {
		return err
	}
	for i, v := range got {
		if want := int64(i*1000+c.Rank()) - int64(s)<<33; v != want {
			return fmt.Errorf("from rank %d: %d, want %d", i, v, want)
		}
	}
	return nil
}

func checkAllreduceAll(ctx context.Context, c *collective.Comm, s int) error {
	for _, op := range []collective.Op{collective.Sum, collective.Max, collective.Min} {
		if err := checkAllreduce(ctx, c, s, op, func(v int64) float32 { return float32(v) / 4 }); err != nil {
			return fmt.Errorf("float32 %v: %w", op, err)
		}
		if err := checkAllreduce(ctx, c, s, op, func(v int64) float64 { return float64(v) / 8 }); err != nil {
			return fmt.Errorf("float64 %v: %w", op, err)
		}
		if err := checkAllreduce(ctx, c, s, op, func(v int64) int32 { return int32(v) }); err != nil {
			return fmt.Errorf("int32 %v: %w", op, err)
		}
		if err := checkAllreduce(ctx, c, s, op, func(v int64) int64 { return v << 20 }); err != nil {
			return fmt.Errorf("int64 %v: %w", op, err)
		}
	}
	return nil
}

// ReduceInput is element i of rank r's Allreduce input, before conversion:
// a small integer, so that sums are exact in every element type.
func ReduceInput(r, i int) int64 {
	return int64((r*7919+i*104729)%2001) - 1000
}

func checkAllreduce[T collective.Number](ctx context.Context, c *collective.Comm, n int, op collective.Op, conv func(int64) T) error {
	buf := make([]T, n)
	for i := range buf {
		buf[i] = conv(ReduceInput(c.Rank(), i))
	}
	if err := collective.Allreduce(ctx, c, buf, op); err != nil {
		return err
	}
	for i, got := range buf {
		want := conv(ReduceInput(0, i))
		for r := 1; r < c.Size(); r++ {
			v := conv(ReduceInput(r, i))
			switch op {
			case collective.Sum:
				want += v
			case collective.Max:
				want = max(want, v)
			case collective.Min:
				want = min(want, v)
			}
		}
		if got != want {
			return fmt.Errorf("element %d of %d = %v, want %v", i, n, got, want)
		}
	}
	return nil
}
