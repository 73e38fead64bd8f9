// Package kernels is the similarity engine: inner products between two sets
// of row-major vectors, reduced on the fly by fused epilogues (top-k,
// max/argmax, shifted max, nearest centroid, prefix max). It sees plain
// slices and shapes, never files, ranks, configs or NATS.
package kernels
