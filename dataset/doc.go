// Package dataset reads and writes embedding sets: numpy .npy files
// (float16/float32 matrices streamed in row blocks; small int, float and
// string arrays), clip-retrieval metadata parquet files, and the two
// on-disk layouts hpcrun knows:
//
//	clip-retrieval: img_emb/img_emb_N.npy + metadata/metadata_N.parquet (id column)
//	embeddings:     images/img_emb_N.npy + labels/labels_N.npy + paths/paths_N.npy
//
// Shards are numbered N and sorted numerically. Every write is atomic (temp
// file + rename), and every read validates: bad magic, truncated data,
// wrong dtype, disagreeing dims, metadata rows != embedding rows, NaN/Inf,
// and rows that are not unit vectors are errors naming the file.
// It imports nothing of hpcrun.
package dataset
