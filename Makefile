# Updraft's developer entry points. `make help` lists them.

# CI images often have Go in /usr/local/go/bin without it being on PATH.
ifeq ($(shell command -v go 2>/dev/null),)
export PATH := /usr/local/go/bin:$(PATH)
endif

GO ?= go
BIN := bin/updraft

# make run: where the single embedded node listens, the API key it accepts
# and the browser origins it lets open a WebSocket (local dev servers on
# any port); each can be overridden from the environment or the command
# line. UPDRAFT_JWT_SECRET, when set, makes it accept tokens signed with it
# besides anonymous connects.
UPDRAFT_ADDR ?= 127.0.0.1:8080
UPDRAFT_API_KEY ?= dev-key
UPDRAFT_ALLOWED_ORIGINS ?= http://localhost:*,http://127.0.0.1:*,http://[::1]:*
UPDRAFT_JWT_SECRET ?=

# Tools `make test` needs beyond Go: redis-server always, a C compiler for
# -race, the PostgreSQL server (initdb, postgres) for the tests that start
# their own, Node.js 20+ for the TypeScript SDK and Debian's chromium for
# its browser tests. Add --haproxy here if tests ever start needing it.
TEST_DEPS := --race --postgres --node --chromium

# Every Go file we own, for gofmt (testdata may hold deliberately odd code).
GOFILES = $(shell find . -name '*.go' -not -path './.git/*' -not -path './bin/*' \
	-not -path './tmp/*' -not -path '*/testdata/*' -not -path '*/node_modules/*')

.DEFAULT_GOAL := build
.PHONY: help build run demo deps test bench cluster db db-down fmt lint clean

help:
	@echo 'make build    build $(BIN)'
	@echo 'make run      run one embedded node on $(UPDRAFT_ADDR) (no Redis, anonymous access on, the demo app at /)'
	@echo 'make demo     rebuild the demo app the binary serves at / (demo/dist, from sdk/js/demo; needs Node.js 20+), then commit demo/'
	@echo 'make deps     check (and on Debian/Ubuntu as root, install) redis-server, PostgreSQL, a C compiler, Node.js 20+ and chromium'
	@echo 'make test     go vet, go test -race (e2e: race-checked gateways), a short fuzz of the protocol decoder and filter parser, then the TypeScript SDK tests (sdk/js)'
	@echo 'make bench    run every Go benchmark, then the updraft bench scenarios (scripts/bench.sh)'
	@echo 'make cluster  Redis + 3 gateways (127.0.0.1:8081-8083) + haproxy on 127.0.0.1:8080'
	@echo 'make db       start a throwaway PostgreSQL on 127.0.0.1:55432 (DB_PORT=...) with a sample orders table; prints export DB=...'
	@echo 'make db-down  stop the PostgreSQL make db started, by PID, and delete its data'
	@echo 'make cross    check that updraft builds for linux, darwin and windows (CI runs it before make test)'
	@echo 'make fmt      gofmt the tree'
	@echo 'make lint     fail on unformatted files, an untidy go.mod, go vet (and staticcheck if installed)'
	@echo 'make clean    remove bin/ and tmp/cluster/'

# The version `updraft version` prints: git's description of the checkout,
# since builds here may run with -buildvcs=false and so carry no revision.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)

build:
	$(GO) build -ldflags '-X main.version=$(VERSION)' -o $(BIN) ./cmd/updraft

# What the hint shows: the CLI's default URLs point at 127.0.0.1:8080; any
# other address needs --url. A set API key is shown as $UPDRAFT_API_KEY.
RUN_HOST = $(if $(filter :%,$(UPDRAFT_ADDR)),127.0.0.1$(UPDRAFT_ADDR),$(UPDRAFT_ADDR))
RUN_URL = $(if $(filter 127.0.0.1:8080,$(RUN_HOST)),,--url $(1)://$(RUN_HOST)$(2) )
RUN_KEY = $(if $(filter dev-key,$(UPDRAFT_API_KEY)),dev-key,\"\$$UPDRAFT_API_KEY\")

run: build
	@echo "updraft: embedded node on http://$(RUN_HOST) (open it in a browser for the demo app), try: $(BIN) tail $(call RUN_URL,ws,/api/realtime)chat/general   then in another terminal: $(BIN) emit $(call RUN_URL,http,)--api-key $(RUN_KEY) chat/general message '{\"text\":\"hi\"}'"
	@$(if $(UPDRAFT_JWT_SECRET),echo 'updraft: tokens signed with UPDRAFT_JWT_SECRET are accepted too (mint one with: $(BIN) token --sub user-7 --subscribe "chat/*"); anonymous access stays on',true)
	@UPDRAFT_REDIS_URL= UPDRAFT_ALLOW_ANONYMOUS=true UPDRAFT_DEMO=true UPDRAFT_API_KEY='$(UPDRAFT_API_KEY)' \
		UPDRAFT_ADDR='$(UPDRAFT_ADDR)' UPDRAFT_ALLOWED_ORIGINS='$(UPDRAFT_ALLOWED_ORIGINS)' \
		UPDRAFT_JWT_SECRET='$(UPDRAFT_JWT_SECRET)' exec $(BIN) serve

# The demo app's assets are committed (make run needs no Node); this
# rebuilds them from sdk/js/demo and @updraft/client's sources, and
# records their digest in demo/sources.sha256 for the staleness test.
demo:
	cd sdk/js && npm ci --no-audit --no-fund && npm run build --workspace @updraft/demo

deps:
	@scripts/ensure-deps.sh $(TEST_DEPS)

# The fuzz runs are bounded by executions, not time (about 10-15 s here):
# Go 1.26's fuzzing coordinator can fail a time-bounded run with "context
# deadline exceeded" and no crasher (golang/go#75804, fixed in Go 1.27).
test: deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m $$($(GO) list ./... | grep -v '/e2e$$')
	UPDRAFT_TESTENV_RACE=1 $(GO) test -count=1 -timeout 30m ./e2e
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeRequest$$' -fuzztime=300000x -fuzzminimizetime=1s ./protocol
	$(GO) test -run='^$$' -fuzz='^FuzzParseFilter$$' -fuzztime=200000x -fuzzminimizetime=1s ./protocol
	$(MAKE) --no-print-directory build
	cd sdk/js && npm ci --no-audit --no-fund && npm run build && UPDRAFT_BIN=$(CURDIR)/$(BIN) npm test

bench: deps build
	$(GO) test -run='^$$' -bench=. -benchmem ./...
	UPDRAFT_BIN=$(BIN) scripts/bench.sh

cluster: build
	@scripts/ensure-deps.sh --haproxy
	@UPDRAFT_BIN=$(BIN) scripts/cluster.sh

# A throwaway PostgreSQL for the README's database sections, started the
# way the tests start theirs; DB_PORT and DB_DIR (tmp/db) reach the script
# from the command line or the environment. Only the export line goes to
# stdout: eval "$$(make -s db)".
db:
	@scripts/db.sh up

db-down:
	@scripts/db.sh down

fmt:
	@gofmt -w $(GOFILES)

lint:
	@unformatted=$$(gofmt -l $(GOFILES)); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed (run make fmt):"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum not tidy (run go mod tidy):"; $(GO) mod tidy -diff; exit 1; }
	@if command -v staticcheck >/dev/null 2>&1; then echo staticcheck ./...; staticcheck ./...; fi

# The CLI cross-built for the systems users install it on: the gateway's
# raw socket writes are Unix-only, behind a portable fallback
# (gateway/wsconn.go). CI runs it (.ci/run).
.PHONY: cross
cross:
	@for os in linux darwin windows; do \
		echo "GOOS=$$os go build ./cmd/updraft"; \
		GOOS=$$os $(GO) build -o /dev/null ./cmd/updraft || exit 1; \
	done

clean:
	rm -rf bin tmp/cluster
