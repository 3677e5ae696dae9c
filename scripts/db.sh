#!/usr/bin/env bash
# db.sh starts and stops a throwaway PostgreSQL for trying Updraft's
# database features (make db, make db-down), set up the way the tests set up
# theirs (internal/testenv/postgres.go): a fresh cluster whose superuser
# updraft needs no password, a database updraft, listening on 127.0.0.1
# only, fsync off (fast; not for data you want to keep). As root the server
# runs as the postgres system user (nobody if there is none): PostgreSQL
# refuses to run as root.
#
#   scripts/db.sh up     start it unless it runs, create the sample table
#                        orders (id serial primary key, customer_id int,
#                        status text, total numeric) with a few rows, and
#                        print: export DB='postgres://...'
#   scripts/db.sh down   stop the server `up` started, by the PID it
#                        recorded, and delete its data
#
# Only the export line goes to stdout, so eval "$(scripts/db.sh up)" sets DB.
# PostgreSQL is installed with scripts/ensure-deps.sh when missing.
#
# Settings (environment): DB_PORT (55432), DB_DIR (tmp/db: data directory,
# socket directory, postgres.log, the postmaster's pid and the URL).
set -euo pipefail

cd "$(dirname "$0")/.."
port=${DB_PORT:-55432}
dir=${DB_DIR:-tmp/db}
if [[ -d $dir ]]; then
	dir=$(cd "$dir" && pwd) # as the server's command line names it
fi
user=updraft
url="postgres://$user@127.0.0.1:$port/updraft?sslmode=disable"

say() { echo "db: $*" >&2; }
die() {
	say "$*"
	exit 1
}

# listening PORT: does something accept connections on 127.0.0.1:PORT?
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ours PID: is PID the postmaster of our data directory?
ours() {
	local args
	args=$(ps -o args= -p "$1" 2>/dev/null) || return 1
	[[ $args == *postgres* && $args == *"$dir/data"* ]]
}

# running prints the recorded postmaster PID if that process still runs.
running() {
	local pid
	pid=$(cat "$dir/pid" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] && ours "$pid" && echo "$pid"
}

# as_server COMMAND...: runs COMMAND as the server's user, with a small
# fixed environment as the tests use.
server_user=
as_server() {
	if [[ -n $server_user ]]; then
		runuser -u "$server_user" -- env -i PATH="$PATH" LC_ALL=C TZ=UTC "$@"
	else
		env LC_ALL=C TZ=UTC "$@"
	fi
}

up() {
	local bindir pid
	bindir=$(scripts/ensure-deps.sh --postgres-bindir) || exit 1
	[[ -n $bindir ]] || die "PostgreSQL's server binaries were not found"
	if pid=$(running); then
		url=$(cat "$dir/url")
		say "PostgreSQL already runs (pid $pid, data in $dir); make db-down stops it"
		echo "export DB='$url'"
		return
	fi
	if listening "$port"; then
		die "127.0.0.1:$port is taken by another process: choose another port, e.g. make db DB_PORT=55433"
	fi
	if [[ $(id -u) == 0 ]]; then
		local u
		for u in postgres nobody; do
			if id -u "$u" >/dev/null 2>&1; then
				server_user=$u
				break
			fi
		done
		[[ -n $server_user ]] || die "PostgreSQL refuses to run as root and there is no postgres or nobody user to run it as"
		command -v runuser >/dev/null || die "runuser not found: it runs PostgreSQL as $server_user (PostgreSQL refuses to run as root)"
	fi

	rm -rf "$dir/data" "$dir/sock" "$dir/pid" "$dir/url" "$dir/postgres.log"
	mkdir -p "$dir/sock"
	dir=$(cd "$dir" && pwd) # absolute: the server's working directory is its data directory
	if [[ -n $server_user ]]; then
		chown "$server_user:" "$dir" "$dir/sock"
		chmod 755 "$dir"
		as_server test -w "$dir" ||
			die "$dir is not reachable by the $server_user user PostgreSQL runs as (a directory above it is private): set DB_DIR to a directory under /tmp"
	fi

	say "starting PostgreSQL ($bindir) on 127.0.0.1:$port, data in $dir"
	as_server "$bindir/initdb" -D "$dir/data" -U "$user" -A trust -E UTF8 --no-locale --no-sync >"$dir/initdb.log" 2>&1 ||
		die "initdb failed: $(tail -n 20 "$dir/initdb.log")"
	rm -f "$dir/initdb.log"
	# pg_ctl -w returns once the server accepts connections; -l sends the
	# server's output to the log, so nothing of it holds our stdout.
	as_server "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 -s \
		-o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c dynamic_shared_memory_type=mmap" \
		start >&2 || die "PostgreSQL did not start: $(tail -n 20 "$dir/postgres.log" 2>/dev/null)"
	pid=$(head -n 1 "$dir/data/postmaster.pid")
	echo "$pid" >"$dir/pid"
	echo "$url" >"$dir/url"

	local psql=psql
	[[ -x $bindir/psql ]] && psql=$bindir/psql
	"$psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U "$user" -d postgres -c 'CREATE DATABASE updraft' >&2
	# The role is named updraft like Updraft's schema, and the default
	# search_path ("$user", public) would put tables created once that
	# schema exists into it, where they cannot be tracked.
	"$psql" -X -q -v ON_ERROR_STOP=1 "$url" >&2 <<'SQL'
ALTER DATABASE updraft SET search_path = public;
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int, status text, total numeric);
INSERT INTO orders (customer_id, status, total) VALUES (7, 'paid', 12.50), (8, 'new', 40.00), (7, 'shipped', 99.99);
SQL
	say "PostgreSQL runs (pid $pid) with a sample table orders (3 rows); stop it with make db-down"
	say "DB=$url"
	echo "export DB='$url'"
}

down() {
	local pid i
	if ! pid=$(running); then
		if [[ -e $dir/pid ]]; then
			say "the recorded PostgreSQL (pid $(cat "$dir/pid")) no longer runs; removing its data"
			rm -rf "$dir/data" "$dir/sock" "$dir/pid" "$dir/url" "$dir/postgres.log"
		else
			say "no PostgreSQL started by make db in $dir"
		fi
		return
	fi
	# SIGINT is PostgreSQL's fast shutdown: sessions are ended, not waited for.
	kill -INT "$pid"
	for ((i = 0; i < 100; i++)); do
		ours "$pid" || break
		sleep 0.1 # polls the exit, for at most 10 s
	done
	if ours "$pid"; then
		say "PostgreSQL (pid $pid) did not stop within 10 s: immediate shutdown"
		kill -QUIT "$pid" 2>/dev/null || true
	fi
	rm -rf "$dir/data" "$dir/sock" "$dir/pid" "$dir/url" "$dir/postgres.log"
	rmdir "$dir" 2>/dev/null || true
	say "stopped PostgreSQL (pid $pid) and removed its data"
}

case ${1:-} in
up) up ;;
down) down ;;
*)
	sed -n '2,21s/^# \{0,1\}//p' "$0" >&2
	exit 2
	;;
esac
