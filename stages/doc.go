// Package stages holds one file per pipeline step (embed, kmeans, dedup,
// sims, prune, subsample, zeroshot). A stage takes its config section, a
// collective.Comm and a kernels backend, and owns its files under workdir.
package stages
