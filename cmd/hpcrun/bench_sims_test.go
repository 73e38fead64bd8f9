package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestBenchSimsSmall runs the sims bench ops on a small shape: hpcrun's
// top-k agrees with FAISS's entirely, and the stage bench reports both
// stages and prunes the planted 1%.
func TestBenchSimsSmall(t *testing.T) {
	o := &benchOpts{ranks: 1, nq: 20, nb: 3000, dim: 64, k: 10, dtype: "float16", threads: 1, host: "test",
		set: map[string]bool{"dtype": true}}
	ms, err := benchSims(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	hp := ms[len(ms)-1]
	if hp.Impl != "hpcrun" || hp.Seconds <= 0 || hp.NB != 3000 {
		t.Fatalf("hpcrun measurement: %+v", hp)
	}
	if exec.Command(simsBenchPython(), "-c", "import faiss").Run() == nil {
		if len(ms) != 2 || ms[0].Impl != "faiss" || !strings.Contains(hp.Note, "agree 100.0000%") {
			t.Fatalf("with faiss: %+v", ms)
		}
	} else if os.Getenv("HPCRUN_REQUIRE_REFS") == "1" {
		t.Fatal("python3 with faiss is required (apt-get install python3-faiss)")
	}
	st, err := benchSimsStage(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0].Op != "sims-stage" || st[1].Op != "prune-stage" || st[1].Seconds <= 0 {
		t.Fatalf("stage measurements: %+v", st)
	}
	// about the planted 1% (30 rows at cos ~0.8 to an eval row) is pruned
	var pruned int
	if _, err := fmt.Sscanf(st[1].Note[strings.Index(st[1].Note, "; ")+2:], "reference 300 rows; candidates 3000; %d pruned", &pruned); err != nil || pruned < 25 || pruned > 40 {
		t.Fatalf("pruned %d (%v): %s", pruned, err, st[1].Note)
	}
}
