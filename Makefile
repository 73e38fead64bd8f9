# hpcrun - two commands set up a fresh machine:
#   make run    install what is missing, build, run the quickstart experiment
#   make test   install what is missing, pass all tests
export PATH := /usr/local/go/bin:$(PATH)
GO        ?= go
BIN       := bin/hpcrun
VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo dev)
QUICK     := data/quickstart
SHARED    ?= ../shared
TEST_TIMEOUT ?= 1200s

.PHONY: all deps build run test test-go test-noasm lint bench slurm-up parquet-testdata clean ptx gpu-check gpu-check-dry soak

all: build

deps:
	@bash scripts/deps.sh

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/hpcrun

# The synthetic world: synth does nothing when a world of its version is there.
run: deps build
	$(BIN) synth --out $(QUICK) --preset quickstart --seed 333
	$(BIN) run configs/quickstart.toml

# The real one-node Slurm the slurm tests submit to (skipped when absent).
slurm-up:
	@rm -f .slurm-up; if [ -f $(SHARED)/slurm/start-local-slurm.sh ]; then \
	  timeout 300 bash $(SHARED)/slurm/start-local-slurm.sh >/tmp/hpcrun-slurm.log 2>&1 \
	    && touch .slurm-up && echo "[test] local Slurm is up" \
	    || { tail -n 20 /tmp/hpcrun-slurm.log; echo "[test] local Slurm failed to start; Slurm tests will skip"; }; \
	else echo "[test] $(SHARED)/slurm/start-local-slurm.sh not found; Slurm tests will skip"; fi

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# With the local Slurm up, the tests that submit real jobs must run (not skip).
test-go:
	HPCRUN_REQUIRE_REFS=1 HPCRUN_REQUIRE_CLANG=1 HPCRUN_REQUIRE_SLURM=$$(test -f .slurm-up && echo 1 || echo 0) \
	  $(GO) test -timeout $(TEST_TIMEOUT) ./...

# the pure-Go twins of every assembly kernel (the tests that only build and
# run C++ or ptxas, which no Go assembly touches, ran in test-go)
test-noasm:
	HPCRUN_REQUIRE_REFS=1 $(GO) test -tags noasm -timeout $(TEST_TIMEOUT) -skip 'TestHostSim|TestPTXAssemble|TestPTXFresh' ./dataset/... ./kernels/...

test: deps slurm-up lint build test-go test-noasm gpu-check-dry

# The GPU check bundle, built and run here on the Go emulator of the kernels
# (tiny shapes, no torch): a GPU lease is short, its script must not break there.
gpu-check-dry:
	bash scripts/gpu-check.sh --dry-run > /tmp/hpcrun-gpu-check-dry.log 2>&1 \
	  || { tail -n 40 /tmp/hpcrun-gpu-check-dry.log; exit 1; }
	@grep -E '^\[gpu-check' /tmp/hpcrun-gpu-check-dry.log | tail -n 3

# Every hot path beside its reference, each pair in one run on the same data.
bench: deps build
	$(BIN) bench --ops peak,read --json bench-read.json
	/usr/bin/python3 scripts/bench_faiss.py --fp32 --json bench-faiss.json
	bash scripts/bench-embed.sh
	bash scripts/bench-kmeans.sh
	bash scripts/bench-sims.sh

# Longer fault injection and fuzzing: every stage struck SOAK_ROUNDS more times
# at random points, and each fuzz target run FUZZTIME (new corpus entries stay).
SOAK_ROUNDS ?= 3
FUZZTIME ?= 2m
soak: deps build
	HPCRUN_REQUIRE_REFS=1 $(GO) test -timeout 0 -count=$(SOAK_ROUNDS) -run 'TestFaultEveryStage|TestKillRankMidKMeansThenResume|TestSeveralHostsLinkCut' ./cmd/hpcrun/
	$(GO) test -run XXX -fuzz FuzzReadHeader -fuzztime $(FUZZTIME) ./dataset/
	$(GO) test -run XXX -fuzz FuzzParse -fuzztime $(FUZZTIME) ./configs/
	$(GO) test -run XXX -fuzz FuzzExpandHostlist -fuzztime $(FUZZTIME) ./slurm/
	$(GO) test -run XXX -fuzz FuzzLoadEnv -fuzztime $(FUZZTIME) ./slurm/
	$(GO) test -run XXX -fuzz FuzzTarReader -fuzztime $(FUZZTIME) ./stages/

# Regenerates dataset/testdata/duckdb_*.parquet with DuckDB (npm).
parquet-testdata:
	tmp=$$(mktemp -d) && cp scripts/make-parquet-testdata.mjs $$tmp/ && \
	  (cd $$tmp && npm init -y >/dev/null && npm install --silent @duckdb/node-api@1.5.6-r.1 && \
	   node make-parquet-testdata.mjs $(CURDIR)/dataset/testdata) && rm -rf $$tmp

# Regenerates kernels/cuda/*.ptx from the .cu files (Debian clang-19, no CUDA toolkit).
ptx:
	bash scripts/ptx.sh

# Builds gpu-bundle/ (git-ignored); then on a GPU node: bash gpu-bundle/run.sh [quick]
gpu-check:
	bash scripts/gpu-check.sh

clean:
	rm -rf bin runs
