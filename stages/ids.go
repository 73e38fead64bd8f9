package stages

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"

	"hpcrun/dataset"
)

// checkIDsAcrossShards fails when an id of a clip-retrieval dataset appears
// in two of its shards: ids name samples (prune's keep lists, subsample's
// tar keys), so a duplicate would merge two images in every output.
// Uniqueness inside a shard is checked whenever a shard's ids are read
// (dataset.IDs); across shards, every rank passes the ids it has read of
// its own shards (ids[i] of shards[i]) and the ranks exchange each shard's
// smallest and largest id.
// Shards whose ranges do not overlap cannot share an id — clip-retrieval
// numbers samples consecutively, so that is the usual end of it. Shards
// whose ranges overlap are compared by rank 0, which reads just their id
// columns (memory: 16 bytes per id of those shards), and every rank returns
// rank 0's verdict. Collective: every rank calls it. The embeddings layout
// (ids are row numbers) needs no check.
func checkIDsAcrossShards(ctx context.Context, env *Env, d *dataset.Dataset, shards []int, ids [][]int64) error {
	if d.Opts.Layout != dataset.ClipRetrieval {
		return nil
	}
	// (shard, min, max) of this rank's non-empty shards
	var mine []byte
	for i, s := range shards {
		if len(ids[i]) == 0 {
			continue
		}
		lo, hi := slices.Min(ids[i]), slices.Max(ids[i])
		mine = binary.LittleEndian.AppendUint64(mine, uint64(s))
		mine = binary.LittleEndian.AppendUint64(mine, uint64(lo))
		mine = binary.LittleEndian.AppendUint64(mine, uint64(hi))
	}
	parts, err := env.Comm.Allgatherv(ctx, mine)
	if err != nil {
		return err
	}
	type span struct {
		shard  int
		lo, hi int64
	}
	var spans []span
	for _, p := range parts {
		for i := 0; i+24 <= len(p); i += 24 {
			spans = append(spans, span{int(binary.LittleEndian.Uint64(p[i:])),
				int64(binary.LittleEndian.Uint64(p[i+8:])), int64(binary.LittleEndian.Uint64(p[i+16:]))})
		}
	}
	overlap := overlappingShards(spans, func(s span) (int, int64, int64) { return s.shard, s.lo, s.hi })
	if len(overlap) == 0 {
		return nil
	}
	var verdict []byte
	if env.Rank() == 0 {
		if err := uniqueAcross(d, overlap); err != nil {
			verdict = []byte(err.Error())
		}
	}
	if verdict, err = env.Comm.Bcast(ctx, 0, verdict); err != nil {
		return err
	}
	if len(verdict) > 0 {
		return errors.New(string(verdict))
	}
	return nil
}

// overlappingShards returns, sorted, the shards whose [lo, hi] id range
// overlaps another shard's.
func overlappingShards[S any](spans []S, get func(S) (shard int, lo, hi int64)) []int {
	sort.Slice(spans, func(i, j int) bool {
		_, a, _ := get(spans[i])
		_, b, _ := get(spans[j])
		return a < b
	})
	in := map[int]bool{}
	reach, reachShard := int64(0), -1 // the largest hi so far, and its shard
	for i, sp := range spans {
		s, lo, hi := get(sp)
		if i > 0 && lo <= reach {
			in[s], in[reachShard] = true, true
		}
		if i == 0 || hi > reach {
			reach, reachShard = hi, s
		}
	}
	out := make([]int, 0, len(in))
	for s := range in {
		out = append(out, s)
	}
	sort.Ints(out)
	return out
}

// uniqueAcross reads the ids of shards and fails on the first id found in
// two of them, naming both metadata files.
func uniqueAcross(d *dataset.Dataset, shards []int) error {
	type entry struct {
		id    int64
		shard int32
	}
	var all []entry
	for _, s := range shards {
		ids, err := d.IDs(s)
		if err != nil {
			return err
		}
		for _, id := range ids {
			all = append(all, entry{id, int32(s)})
		}
	}
	slices.SortFunc(all, func(a, b entry) int {
		if c := cmp.Compare(a.id, b.id); c != 0 {
			return c
		}
		return cmp.Compare(a.shard, b.shard)
	})
	for i := 1; i < len(all); i++ {
		if all[i].id == all[i-1].id {
			a, b := d.Shards[all[i-1].shard], d.Shards[all[i].shard]
			return fmt.Errorf("dataset %s: id %d is in two shards: %s and %s (column %q; ids name samples and must be unique)",
				d.Name, all[i].id, a.Meta, b.Meta, d.Opts.IDColumn)
		}
	}
	return nil
}
