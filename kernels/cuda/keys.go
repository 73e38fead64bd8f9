package cuda

import "math"

// Keys: a (value, index) pair as one uint64 whose unsigned order is the
// order of every op (larger value first, then smaller index); key 0 means
// "none". The Go twin of make_key / key_value in common.cuh:
//
//	key = orderBits(v) << 32 | ^uint32(idx)
//
// orderBits maps float32 to uint32 preserving order (negative values
// flipped, positive values with the sign bit set); -0 is made +0 first so
// equal values tie on the index. Every finite value has orderBits above
// 0x007fffff, so no real key is 0.

func orderBits(v float32) uint32 {
	u := math.Float32bits(v)
	if u&0x80000000 != 0 {
		return ^u
	}
	return u | 0x80000000
}

func makeKey(v float32, idx int64) uint64 {
	if v == 0 {
		v = 0 // -0 -> +0
	}
	return uint64(orderBits(v))<<32 | uint64(^uint32(idx))
}

func keyValue(k uint64) float32 {
	o := uint32(k >> 32)
	if o&0x80000000 != 0 {
		return math.Float32frombits(o & 0x7fffffff)
	}
	return math.Float32frombits(^o)
}

func keyIndex(k uint64) int64 { return int64(^uint32(k)) }
