#!/usr/bin/env bash
# cluster.sh runs a local Updraft cluster in the foreground, the topology of
# deploy/docker-compose.yml as plain processes (make cluster):
#
#   127.0.0.1:8080        haproxy, WebSocket at ws://127.0.0.1:8080/api/realtime
#   127.0.0.1:8081-8083   three `updraft serve` gateways
#   127.0.0.1:6390        redis-server, nothing persisted
#   127.0.0.1:8404        haproxy's stats page (which gateways are in rotation)
#   tmp/cluster/          one log per process, and the generated haproxy.cfg
#
# Ctrl-C stops everything by PID: the gateways drain first, then haproxy and
# Redis go; a second Ctrl-C kills at once. A process that dies (kill -9 a
# gateway to watch its clients fail over) is reported and the rest keep
# running.
#
# With UPDRAFT_DATABASE_URL set, two `updraft tracker` processes run too
# (127.0.0.1:8091-8092 serve their /metrics; one leads, one stands by):
# set UPDRAFT_TRACK_TABLES to the tables to track.
#
# Settings (environment): UPDRAFT_BIN (bin/updraft), CLUSTER_NODES (3),
# CLUSTER_LB_PORT (8080), CLUSTER_NODE_PORT (8081, the first gateway's),
# CLUSTER_REDIS_PORT (6390), CLUSTER_STATS_PORT (8404),
# CLUSTER_TRACKER_PORT (8091, the first tracker's). UPDRAFT_* variables
# reach the gateways; unset, these default to UPDRAFT_ALLOW_ANONYMOUS=true,
# UPDRAFT_API_KEY=dev-key, UPDRAFT_JWT_SECRET=dev-secret,
# UPDRAFT_DRAIN_TIMEOUT=5s and, as under make run, UPDRAFT_ALLOWED_ORIGINS
# to the loopback origins on any port (a local dev server's pages).
set -euo pipefail

cd "$(dirname "$0")/.."
bin=${UPDRAFT_BIN:-bin/updraft}
nodes=${CLUSTER_NODES:-3}
lb_port=${CLUSTER_LB_PORT:-8080}
node_port=${CLUSTER_NODE_PORT:-8081}
redis_port=${CLUSTER_REDIS_PORT:-6390}
stats_port=${CLUSTER_STATS_PORT:-8404}
tracker_port=${CLUSTER_TRACKER_PORT:-8091}
trackers=0
[[ -n ${UPDRAFT_DATABASE_URL:-} ]] && trackers=2
dir=tmp/cluster

export UPDRAFT_ALLOW_ANONYMOUS=${UPDRAFT_ALLOW_ANONYMOUS:-true}
export UPDRAFT_API_KEY=${UPDRAFT_API_KEY:-dev-key}
export UPDRAFT_JWT_SECRET=${UPDRAFT_JWT_SECRET:-dev-secret}
export UPDRAFT_DRAIN_TIMEOUT=${UPDRAFT_DRAIN_TIMEOUT:-5s}
export UPDRAFT_ALLOWED_ORIGINS=${UPDRAFT_ALLOWED_ORIGINS:-http://localhost:*,http://127.0.0.1:*,http://[::1]:*}
export UPDRAFT_REDIS_URL=redis://127.0.0.1:$redis_port/0

say() { echo "cluster: $*" >&2; }
die() {
	say "$*"
	exit 1
}

# The processes we started, by PID, and their names (node-1, redis, ...).
pids=()
names=()
alive=()

# listening PORT: does something accept connections on 127.0.0.1:PORT?
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# http_status PORT PATH prints the status code of GET http://127.0.0.1:PORT/PATH.
http_status() {
	(
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
		IFS=' ' read -r -t 2 _ code _ <&3 && echo "$code"
	) 2>/dev/null || true
}

log_tail() {
	say "last lines of $dir/$1.log:"
	tail -n 20 "$dir/$1.log" >&2 || true
}

# start NAME COMMAND...: runs COMMAND in the background, logging to
# tmp/cluster/NAME.log. With job control on while it starts, the process gets
# its own process group, so Ctrl-C in the terminal reaches only this script,
# which then stops everything in order.
start() {
	local name=$1
	shift
	set -m
	"$@" </dev/null >"$dir/$name.log" 2>&1 &
	pids+=($!)
	set +m
	names+=("$name")
	alive+=(1)
}

# stop_some PATTERN SECONDS: SIGTERM the live processes whose name matches
# PATTERN, wait up to SECONDS for them, then SIGKILL what is left.
stop_some() {
	local pattern=$1 secs=$2 i waited=0 left
	# live I: is process I still ours to stop, and matched by PATTERN?
	# shellcheck disable=SC2053 # PATTERN is a glob
	live() { ((alive[$1])) && [[ ${names[$1]} == $pattern ]]; }
	for i in "${!pids[@]}"; do
		if live "$i"; then
			kill -TERM "${pids[i]}" 2>/dev/null || true
		fi
	done
	while :; do
		left=0
		for i in "${!pids[@]}"; do
			if live "$i"; then
				if kill -0 "${pids[i]}" 2>/dev/null; then
					left=1
				else
					wait "${pids[i]}" 2>/dev/null || true
					alive[i]=0
				fi
			fi
		done
		((left)) || return 0
		if ((waited == secs * 10)); then
			for i in "${!pids[@]}"; do
				if live "$i"; then
					say "${names[i]} (pid ${pids[i]}) still running after ${secs}s: SIGKILL"
					kill -KILL "${pids[i]}" 2>/dev/null || true
				fi
			done
		fi
		sleep 0.1
		waited=$((waited + 1))
	done
}

# stopping: 0 running, 1 stopping (a second Ctrl-C kills), 2 stopped.
stopping=0
stop_all() {
	case $stopping in
	1)
		for i in "${!pids[@]}"; do
			if ((alive[i])); then kill -KILL "${pids[i]}" 2>/dev/null || true; fi
		done
		for i in "${!pids[@]}"; do
			if ((alive[i])); then wait "${pids[i]}" 2>/dev/null || true; fi
		done
		stopping=2
		say "killed"
		exit 130
		;;
	2) return 0 ;;
	esac
	stopping=1
	if ((${#pids[@]})); then
		say "stopping: gateways drain (up to $UPDRAFT_DRAIN_TIMEOUT), then haproxy and redis"
		local drain=${UPDRAFT_DRAIN_TIMEOUT%s}
		[[ $drain =~ ^[0-9]+$ ]] || drain=15
		stop_some 'node-*' $((drain + 10))
		stop_some 'tracker-*' 10
		stop_some haproxy 5
		stop_some redis 10
		say "stopped; logs in $dir/"
	fi
	stopping=2
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

[[ -x $bin ]] || die "$bin not found: run make build (or make cluster)"
for cmd in redis-server haproxy; do
	command -v "$cmd" >/dev/null || die "$cmd not found: run scripts/ensure-deps.sh --haproxy"
done
ports=("$lb_port" "$redis_port" "$stats_port")
for ((n = 0; n < nodes; n++)); do ports+=($((node_port + n))); done
for ((n = 0; n < trackers; n++)); do ports+=($((tracker_port + n))); done
for p in "${ports[@]}"; do
	if listening "$p"; then
		die "127.0.0.1:$p is already in use (another make cluster? see CLUSTER_*_PORT in $0)"
	fi
done
mkdir -p "$dir"

# haproxy.cfg: deploy/haproxy.cfg with local addresses.
awk -v lb="$lb_port" -v stats="$stats_port" -v nodes="$nodes" -v base="$node_port" '
	/^[ \t]*bind[ \t]+:8080([ \t]|$)/ { sub(/:8080/, "127.0.0.1:" lb) }
	/^[ \t]*bind[ \t]+:8404([ \t]|$)/ { sub(/:8404/, "127.0.0.1:" stats) }
	/^[ \t]*server[ \t]+gw[0-9]+[ \t]+gateway[0-9]+:8080/ {
		if (!done) {
			for (i = 1; i <= nodes; i++) printf "\tserver node-%d 127.0.0.1:%d\n", i, base + i - 1
			done = 1
		}
		next
	}
	{ print }
' deploy/haproxy.cfg >"$dir/haproxy.cfg"
haproxy -c -q -f "$dir/haproxy.cfg" || die "generated $dir/haproxy.cfg is invalid"

start redis redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
	--dir "$dir" --daemonize no
for ((i = 0; i < 100; i++)); do
	listening "$redis_port" && break
	kill -0 "${pids[0]}" 2>/dev/null || {
		log_tail redis
		die "redis-server exited"
	}
	sleep 0.1
done
listening "$redis_port" || die "redis-server not listening on 127.0.0.1:$redis_port after 10s"

for ((n = 1; n <= nodes; n++)); do
	start "node-$n" env UPDRAFT_ADDR="127.0.0.1:$((node_port + n - 1))" UPDRAFT_NODE_ID="node-$n" "$bin" serve
done
for ((n = 1; n <= nodes; n++)); do
	port=$((node_port + n - 1))
	for ((i = 0; i < 300; i++)); do
		[[ $(http_status "$port" /readyz) == 200 ]] && break
		kill -0 "${pids[n]}" 2>/dev/null || {
			log_tail "node-$n"
			die "node-$n exited before it was ready"
		}
		sleep 0.1
	done
	[[ $(http_status "$port" /readyz) == 200 ]] || {
		log_tail "node-$n"
		die "node-$n not ready on 127.0.0.1:$port after 30s"
	}
done

for ((n = 1; n <= trackers; n++)); do
	start "tracker-$n" env UPDRAFT_ADDR="127.0.0.1:$((tracker_port + n - 1))" "$bin" tracker
done

start haproxy haproxy -db -f "$dir/haproxy.cfg"
for ((i = 0; i < 100; i++)); do
	listening "$lb_port" && break
	sleep 0.1
done
listening "$lb_port" || {
	log_tail haproxy
	die "haproxy not listening on 127.0.0.1:$lb_port"
}

gateways=""
for ((n = 1; n <= nodes; n++)); do gateways+=" node-$n=127.0.0.1:$((node_port + n - 1)) (pid ${pids[n]})"; done
say "up: haproxy on http://127.0.0.1:$lb_port (stats http://127.0.0.1:$stats_port/), redis 127.0.0.1:$redis_port"
say "gateways:$gateways"
if ((trackers)); then
	say "trackers: 127.0.0.1:$tracker_port-$((tracker_port + trackers - 1)) (/metrics), tables: ${UPDRAFT_TRACK_TABLES:-none yet (updraft track TABLE)}"
fi
say "try: $bin tail chat/general   then: $bin emit --api-key $UPDRAFT_API_KEY chat/general message '{\"text\":\"hi\"}'"
say "logs in $dir/; Ctrl-C stops everything"

# Report processes that die; keep the rest running until Ctrl-C.
while :; do
	running=0
	for i in "${!pids[@]}"; do
		((alive[i])) || continue
		if kill -0 "${pids[i]}" 2>/dev/null; then
			running=1
			continue
		fi
		status=0
		wait "${pids[i]}" 2>/dev/null || status=$?
		alive[i]=0
		say "${names[i]} (pid ${pids[i]}) exited with status $status"
		log_tail "${names[i]}"
	done
	((running)) || die "every process has exited"
	sleep 0.5
done
