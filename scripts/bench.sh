#!/usr/bin/env bash
# bench.sh runs the `updraft bench` scenarios against local processes, the
# setting docs/benchmarks.md reports (make bench runs it after the Go
# benchmarks): redis-server and two gateways built without -race on
# loopback ports, started here and stopped by PID at the end. Each scenario
# prints one JSON object per run to tmp/bench/RESULTS.jsonl and a table to
# the terminal.
#
# idle runs first, against fresh gateways (Go keeps memory it once used, so
# a later idle run would show no growth). db runs when UPDRAFT_DATABASE_URL
# names a PostgreSQL database: a tracker is started for it.
#
# Settings (environment): UPDRAFT_BIN (bin/updraft), BENCH_PORT (18080: the
# gateways take it and the next; Redis 16390), BENCH_RUNS (3),
# BENCH_DURATION (10s).
set -euo pipefail

cd "$(dirname "$0")/.."
bin=${UPDRAFT_BIN:-bin/updraft}
port=${BENCH_PORT:-18080}
redis_port=$((port - 1690))
runs=${BENCH_RUNS:-3}
duration=${BENCH_DURATION:-10s}
dir=tmp/bench
mkdir -p "$dir"
results=$dir/RESULTS.jsonl
: >"$results"

say() { echo "bench: $*" >&2; }
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { # PORT NAME
	for ((i = 0; i < 100; i++)); do
		listening "$1" && return 0
		sleep 0.1
	done
	say "$2 did not come up on 127.0.0.1:$1; its log is in $dir/"
	exit 1
}

command -v redis-server >/dev/null || { say "redis-server not found: run scripts/ensure-deps.sh"; exit 1; }
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
pids+=($!)
wait_for "$redis_port" redis-server

export UPDRAFT_REDIS_URL=redis://127.0.0.1:$redis_port/0 UPDRAFT_ALLOW_ANONYMOUS=true UPDRAFT_API_KEY=bench-key \
	UPDRAFT_LOG_LEVEL=warn
gw=()
for n in 0 1; do
	UPDRAFT_ADDR=127.0.0.1:$((port + n)) UPDRAFT_NODE_ID=bench-$n "$bin" serve >"$dir/gateway-$n.log" 2>&1 &
	pids+=($!)
	gw+=($!)
	wait_for $((port + n)) "gateway $n"
done
ws="--ws ws://127.0.0.1:$port,ws://127.0.0.1:$((port + 1))"
api="--api http://127.0.0.1:$port,http://127.0.0.1:$((port + 1)) --api-key bench-key"
pid="--pid ${gw[0]},${gw[1]}"

run() { # SCENARIO FLAGS...
	say "$*"
	"$bin" bench "$@" --json | tee -a "$results"
}
run idle $ws $pid
run fanout $ws $api $pid --runs "$runs" --duration "$duration"
run fanout $ws $api $pid --runs "$runs" --duration "$duration" --rate 500
run saturate $ws $api $pid --runs "$runs" --duration "$duration"
run topics $ws $api $pid --runs "$runs" --duration "$duration"
if [[ -n ${UPDRAFT_DATABASE_URL:-} ]]; then
	UPDRAFT_ADDR=127.0.0.1:$((port + 2)) UPDRAFT_TRACK_TABLES= "$bin" tracker >"$dir/tracker.log" 2>&1 &
	pids+=($!)
	tracker=$!
	wait_for $((port + 2)) tracker
	run db $ws --pid "${gw[0]},${gw[1]},$tracker" --runs "$runs" --duration "$duration"
else
	say "db skipped: set UPDRAFT_DATABASE_URL to a PostgreSQL database to run it"
fi
say "results in $results"
