// Package collective moves buffers between the ranks of one job: barrier,
// broadcast, scatter, gather, allgather, all-to-all and allreduce over a
// small Transport interface (NATS, or in-process for tests). It knows
// nothing of stages, datasets or kernels, and imports nothing of hpcrun:
// everything it needs comes in Options.
//
// # Layers
//
// A Transport moves whole messages between ranks, matched by (sender, Tag)
// and never by arrival order. Two implement it: the NATS transport (built
// by Connect) and Network, an in-process fabric whose tests can delay,
// reorder and kill ranks deterministically. Both share the mailbox, which
// reassembles chunked messages and watches the peers' heartbeats.
//
// Comm is built on a Transport. Every collective call takes the next
// sequence number, so the ranks must call the same collectives in the same
// order, as in MPI. Byte-level operations (Bcast, Scatter, Scatterv,
// Gather, Gatherv, Allgather, Allgatherv, Alltoallv), Alltoall of counts,
// and the generic Allreduce over float32, float64, int32 and int64 with
// Sum, Max and Min. AsBytes views a numeric slice as bytes for the byte
// operations.
//
// # Bootstrap
//
// Connect joins a job, in this order:
//
//  1. Options.URL set (runtime.nats_url): every rank connects there.
//  2. Otherwise rank 0 starts an embedded nats-server requiring the job's
//     secret, and the others find it: at Host0:Port when the caller gives
//     Host0 (under Slurm, rank 0's node from SLURM_STEP_NODELIST; the port
//     is derived from the job id unless given), else through a rendezvous
//     file in RendezvousDir, which holds the URL and never the secret.
//  3. Outside Slurm, Launch (LaunchLocal) starts N local processes of the
//     same program with everything above in their environment, which
//     OptionsFromEnv reads back.
//
// A one-rank job without a URL needs no server at all.
//
// # Security
//
// Every job has a fresh 256-bit secret (NewSecret), passed only through the
// environment (HPCRUN_JOB_SECRET), never in argv, a file or a log
// (Options.String and LogValue omit it). The embedded server refuses
// clients without it. Subjects are namespaced hpcrun.<job id>.…, so jobs
// sharing a server never see each other's messages. Traffic is not
// encrypted: on a shared cluster network use an external server with TLS.
//
// # Failure
//
// Each rank heartbeats on its own NATS connection every Timeout/10 (at most
// 5s). When a peer has been silent for most of Timeout, every pending and
// future collective on every rank fails within Timeout with a *RankError
// naming it, e.g.
//
//	collective: rank 2 did not answer within 1m0s (nothing heard for 45s) (allreduce #17)
//
// A live rank that is merely late to a collective keeps heartbeating and is
// waited for. A rank that closes its Comm while others still expect a
// message from it is reported at once as having left the job. A rank whose
// collective fails, for whatever reason, aborts the job at once (Transport
// Abort), so that the others fail immediately with the original cause. The rank that hosts the embedded server
// waits (up to Timeout) for the others to leave before shutting it down;
// if it dies, the others fail at once naming it. Once a collective has
// failed, the Comm is broken and returns the same error.
//
// # Data path and determinism
//
// Messages are split into chunks of at most 1 MiB (and below the server's
// max_payload): NATS stores and forwards whole messages, so smaller ones
// pipeline through the server. Each chunk carries a 40-byte header (sender,
// tag, chunk count, offset, total length) in its NATS header, so that the
// payload is sent without an extra copy; the receiver copies chunks
// straight into the destination buffer when it has one (RecvInto). Allreduce of up to 64 KiB per
// rank sends every buffer to every rank, and each rank folds them in rank
// order 0..n-1; larger ones run a ring reduce-scatter then a ring
// allgather, each rank sending and receiving 2(n-1)/n of the buffer, and
// segment k is always folded in ring order starting at rank k. Either way
// the result is bitwise identical on every rank and from run to run.
// Numbers travel in host byte order.
//
// # Bandwidth
//
// BenchAllreduce and BenchPubSub measure what `hpcrun bench` reports: the
// allreduce bus bandwidth (NCCL's algbw·2(n−1)/n) and raw NATS
// publish→subscribe bandwidth through the same server and message size.
// Every byte of a ring allreduce crosses the one server, which serves all n
// ranks at once, so the bus bandwidth is bounded by the server's aggregate
// bandwidth divided by n, not by one stream's.
package collective
