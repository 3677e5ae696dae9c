#!/usr/bin/env bash
# ensure-deps.sh checks that the tools Updraft's tests and local cluster need
# are installed, and installs the missing ones with apt-get on Debian/Ubuntu
# when it runs as root (or sudo works without a password). Elsewhere it says
# what to install and exits 1. It prints nothing when everything is present
# (but the directory --postgres-bindir asks for).
#
#   scripts/ensure-deps.sh            go, make, redis-server >= 7
#   scripts/ensure-deps.sh --race     ... and a C compiler (go test -race needs cgo)
#   scripts/ensure-deps.sh --haproxy  ... and haproxy >= 2.0 (make cluster)
#   scripts/ensure-deps.sh --postgres ... and the PostgreSQL >= 13 server (initdb, postgres)
#   scripts/ensure-deps.sh --node     ... and Node.js >= 20 with npm (the TypeScript SDK's tests)
#   scripts/ensure-deps.sh --chromium ... and Debian's chromium at /usr/bin/chromium (the browser tests)
#   scripts/ensure-deps.sh --postgres-bindir  as --postgres, then print the directory
#                                     holding initdb, postgres and pg_ctl (make db)
#
# Tests start their own redis-server and PostgreSQL on free loopback ports,
# so a freshly installed system service is stopped again rather than left
# running.
set -euo pipefail

want_cc=0
want_haproxy=0
want_postgres=0
want_node=0
want_chromium=0
print_bindir=0
for arg in "$@"; do
	case $arg in
	--race) want_cc=1 ;;
	--haproxy) want_haproxy=1 ;;
	--postgres) want_postgres=1 ;;
	--node) want_node=1 ;;
	--chromium) want_chromium=1 ;;
	--postgres-bindir) want_postgres=1 print_bindir=1 ;;
	-h | --help)
		sed -n '2,19s/^# \{0,1\}//p' "$0"
		exit 0
		;;
	*)
		echo "ensure-deps: unknown argument $arg (want --race, --haproxy, --postgres, --postgres-bindir, --node, --chromium)" >&2
		exit 2
		;;
	esac
done

say() { echo "ensure-deps: $*" >&2; }

have() { command -v "$1" >/dev/null 2>&1; }

# version_ge A B: is dotted version A at least B? Compares the first two fields.
version_ge() {
	local a_major a_minor b_major b_minor
	IFS=. read -r a_major a_minor _ <<<"$1."
	IFS=. read -r b_major b_minor _ <<<"$2."
	a_major=${a_major:-0} a_minor=${a_minor:-0} b_major=${b_major:-0} b_minor=${b_minor:-0}
	((a_major > b_major || (a_major == b_major && a_minor >= b_minor)))
}

# redis_version prints redis-server's version ("7.0.15"), or nothing.
redis_version() {
	have redis-server || return 0
	redis-server --version 2>/dev/null | sed -n 's/.* v=\([0-9][0-9.]*\).*/\1/p'
}

# haproxy_version prints haproxy's version ("2.6.12"), or nothing.
haproxy_version() {
	have haproxy || return 0
	haproxy -v 2>/dev/null | sed -n '1s/^HA-\{0,1\}Proxy version \([0-9][0-9.]*\).*/\1/p'
}

# postgres_bindir prints the directory holding PostgreSQL's server binaries,
# found as internal/testenv finds them: initdb on PATH (symlinks followed)
# with postgres beside it, else the newest /usr/lib/postgresql/VERSION/bin
# (Debian and Ubuntu keep them there, off PATH); or nothing.
postgres_bindir() {
	local d v sorted
	if have initdb; then
		d=$(dirname "$(readlink -f "$(command -v initdb)")")
		if [ -x "$d/postgres" ]; then
			echo "$d"
			return 0
		fi
	fi
	# "VERSION DIR" lines, newest first (9.6 sorts before 10 numerically).
	sorted=$(for d in /usr/lib/postgresql/*/bin; do
		v=${d%/bin}
		echo "${v##*/} $d"
	done | sort -n -r)
	while read -r _ d; do
		if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then
			echo "$d"
			return 0
		fi
	done <<<"$sorted"
}

# postgres_version prints the version of the postgres in directory $1 ("15.18").
postgres_version() {
	"$1/postgres" --version 2>/dev/null | sed -n 's/^postgres (PostgreSQL) \([0-9][0-9.]*\).*/\1/p'
}

# node_version prints node's version without its "v" ("20.20.2"), or nothing.
node_version() {
	have node || return 0
	node --version 2>/dev/null | sed -n 's/^v\([0-9][0-9.]*\).*/\1/p'
}

have_cc() { have "${CC:-cc}" || have gcc || have clang; }

# Each check appends to problems (what is wrong) and, when apt-get can fix
# it, to packages.
problems=()
packages=()
missing() {
	problems+=("$1")
	shift
	packages+=("$@")
}

check() {
	problems=()
	packages=()
	if ! have go && [ ! -x /usr/local/go/bin/go ]; then
		# Debian's golang package is far older than go.mod asks for: no apt.
		problems+=("go not found: install Go $(sed -n 's/^go \([0-9.]*\).*/\1/p' go.mod 2>/dev/null || echo 1.26) or newer from https://go.dev/dl/ (or put /usr/local/go/bin on PATH)")
	fi
	if ! have make; then
		missing "make not found: apt-get install make / dnf install make / xcode-select --install" make
	fi
	local v
	v=$(redis_version)
	if [ -z "$v" ]; then
		missing "redis-server not found: install redis-server 7 or newer: apt-get install redis-server (Debian 12, Ubuntu 24.04) / brew install redis / dnf install redis" redis-server
	elif ! version_ge "$v" 7.0; then
		missing "redis-server $v is too old: install redis-server 7 or newer (Redis's own packages: https://redis.io/docs/latest/operate/oss_and_stack/install/install-redis/) / brew install redis / dnf install redis" redis-server
	fi
	if ((want_cc)) && ! have_cc; then
		missing "no C compiler (go test -race needs cgo): apt-get install gcc libc6-dev / dnf install gcc / xcode-select --install" gcc libc6-dev
	fi
	if ((want_postgres)); then
		local pg_install="install PostgreSQL 13 or newer: apt-get install postgresql / dnf install postgresql-server / brew install postgresql@17 (with its bin directory on PATH)"
		local d
		d=$(postgres_bindir)
		if [ -z "$d" ]; then
			missing "PostgreSQL server not found (initdb and postgres, on PATH or in /usr/lib/postgresql/*/bin): $pg_install" postgresql
		else
			v=$(postgres_version "$d")
			if [ -z "$v" ]; then
				missing "$d/postgres --version does not name a PostgreSQL version: $pg_install" postgresql
			elif ! version_ge "$v" 13.0; then
				missing "PostgreSQL $v in $d is too old: $pg_install" postgresql
			fi
		fi
	fi
	if ((want_node)); then
		# Debian 12's own nodejs is 18: too old, so the message names
		# where a newer one comes from when apt cannot help.
		local node_install="install Node.js 20 or newer with npm: apt-get install nodejs npm (Debian 13, Ubuntu 24.04) / https://nodejs.org/en/download / brew install node"
		v=$(node_version)
		if [ -z "$v" ]; then
			missing "node not found: $node_install" nodejs npm
		elif ! version_ge "$v" 20.0; then
			missing "node $v is too old: $node_install" nodejs npm
		elif ! have npm; then
			missing "npm not found: $node_install" npm
		fi
	fi
	if ((want_chromium)) && [ ! -x /usr/bin/chromium ]; then
		# playwright-core drives this one; it never downloads a browser.
		missing "chromium not found at /usr/bin/chromium: apt-get install chromium (Debian) / on Ubuntu, whose chromium is a snap, Debian's package or Google Chrome linked there" chromium
	fi
	if ((want_haproxy)); then
		v=$(haproxy_version)
		if [ -z "$v" ]; then
			missing "haproxy not found: install haproxy 2.0 or newer: apt-get install haproxy / brew install haproxy / dnf install haproxy" haproxy
		elif ! version_ge "$v" 2.0; then
			missing "haproxy $v is too old: install haproxy 2.0 or newer: apt-get install haproxy / brew install haproxy / dnf install haproxy" haproxy
		fi
	fi
}

# can_apt sets sudo (an array, empty for root) when apt-get may be used.
sudo=()
can_apt() {
	have apt-get || return 1
	if [ "$(id -u)" = 0 ]; then
		sudo=()
		return 0
	fi
	if have sudo && sudo -n true 2>/dev/null; then
		sudo=(sudo -n)
		return 0
	fi
	return 1
}

# stop_service stops a daemon that installing its package started, if an init
# system did start it; tests and make cluster run their own on other ports.
stop_service() {
	if [ -d /run/systemd/system ] && have systemctl; then
		${sudo[@]+"${sudo[@]}"} systemctl stop "$1" >/dev/null 2>&1 || true
	elif have service; then
		${sudo[@]+"${sudo[@]}"} service "$1" stop >/dev/null 2>&1 || true
	fi
}

# finish exits 0, first printing the PostgreSQL directory when asked.
finish() {
	if ((print_bindir)); then
		postgres_bindir
	fi
	exit 0
}

cd "$(dirname "$0")/.."
check
if ((${#problems[@]} == 0)); then
	finish
fi

if ((${#packages[@]} > 0)) && can_apt; then
	# Unique package names, in order.
	uniq=()
	for p in "${packages[@]}"; do
		case " ${uniq[*]-} " in *" $p "*) ;; *) uniq+=("$p") ;; esac
	done
	say "installing ${uniq[*]} with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2
	${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${uniq[@]}" </dev/null >/dev/null
	for p in "${uniq[@]}"; do
		case $p in redis-server | haproxy | postgresql) stop_service "$p" ;; esac
	done
	check
	if ((${#problems[@]} == 0)); then
		say "installed ${uniq[*]}"
		finish
	fi
fi

for p in "${problems[@]}"; do
	say "$p"
done
exit 1
