// Package collective moves buffers between the ranks of one job: barrier,
// broadcast, scatter, gather, allgather and allreduce over a small Transport
// interface (NATS, or in-process for tests). It knows nothing of stages,
// datasets or kernels.
package collective
