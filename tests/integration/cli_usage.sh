#!/bin/sh
# cli_usage.sh: the memvisor CLI's help, usage errors and exit codes, and its
# message when no daemon listens. Needs no daemon. Usage: cli_usage.sh MEMVISOR
set -u

MV=${1:?usage: cli_usage.sh PATH-TO-memvisor}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM
SOCK=$TMP/no-daemon.sock
unset MEMVISOR_SOCKET
fails=0
n=0

# expect WANT_RC DESCRIPTION -- ARGS...: runs memvisor, keeps stdout/stderr.
expect() {
	want=$1 what=$2
	shift 3
	n=$((n + 1))
	"$MV" "$@" >"$TMP/out" 2>"$TMP/err"
	rc=$?
	if [ "$rc" -ne "$want" ]; then
		echo "FAIL: $what: memvisor $*: exit $rc, want $want"
		sed 's/^/  stderr: /' "$TMP/err"
		fails=$((fails + 1))
		return 1
	fi
	return 0
}

# has FILE PATTERN DESCRIPTION: the last command's FILE (out|err) matches.
has() {
	if ! grep -q -- "$2" "$TMP/$1"; then
		echo "FAIL: $3: std$1 lacks '$2'"
		sed "s/^/  std$1: /" "$TMP/$1"
		fails=$((fails + 1))
	fi
}

empty() {
	if [ -s "$TMP/$1" ]; then
		echo "FAIL: $2: std$1 should be empty"
		fails=$((fails + 1))
	fi
}

# Help: stdout, exit 0, for the program and every command.
expect 0 "--help" -- --help && has out "Usage: memvisor" "--help" && empty err "--help"
expect 0 "-h" -- -h && has out "Usage: memvisor" "-h"
expect 0 "--version" -- --version && has out "^memvisor [0-9]" "--version"
expect 0 "help vm create" -- help vm create && has out "vm create NAME" "help vm create"
for cmd in "vm" "vm create" "vm ls" "vm show" "vm pause" "vm resume" "vm stop" \
	   "vm rm" "vm verify" "host" "metrics" "daemon" "image" "image pull" "image ls" \
	   "image rm" "container" "container run" "container ls" "container show" \
	   "container stop" "container rm" "container logs" "cache" "cache prepopulate" \
	   "cache status"; do
	# shellcheck disable=SC2086 # word splitting of $cmd is the point
	expect 0 "$cmd --help" -- $cmd --help && has out "Usage: memvisor" "$cmd --help"
	# shellcheck disable=SC2086
	expect 0 "$cmd -h" -- $cmd -h
done
# Help needs no daemon, even with a bad socket.
expect 0 "help with dead socket" -- --socket "$SOCK" vm ls --help

# Usage errors: exit 2, message on stderr, nothing on stdout.
expect 2 "no command" -- && has err "Usage: memvisor" "no command"
expect 2 "unknown command" -- frobnicate && has err "unknown command 'frobnicate'" "unknown command" \
	&& empty out "unknown command"
expect 2 "unknown global option" -- --bogus
expect 2 "unknown vm command" -- vm frob && has err "frob" "unknown vm command"
expect 2 "vm without command" -- vm
expect 2 "unknown option" -- vm ls --bogus && has err "unknown option '--bogus'" "unknown option"
expect 2 "stray argument" -- vm ls extra
expect 2 "container run without image" -- container run && has err "missing IMAGE" "run without image"
expect 2 "container run bad -e" -- container run -e NOEQUALS img && has err "KEY=VALUE" "run -e"
expect 2 "image pull without ref" -- image pull
expect 2 "unknown image command" -- image frob
expect 2 "cache prepopulate without image" -- cache prepopulate
expect 2 "container rm stray" -- container rm a b
expect 2 "--socket without path" -- vm ls --socket
expect 2 "--json on rm" -- vm rm x --json
for sub in show pause resume stop rm verify; do
	expect 2 "vm $sub without VM" -- vm "$sub" && has err "missing VM" "vm $sub without VM"
	expect 2 "vm $sub with two VMs" -- vm "$sub" a b
done

# vm create checks its flags before talking to the daemon (the socket is dead:
# a 1 here would mean it connected first).
C="--socket $SOCK vm create"
# shellcheck disable=SC2086
{
expect 2 "create without anything" -- $C && has err "missing NAME" "create without anything"
expect 2 "create without --memory" -- $C db --workload idle && has err "missing --memory" "create without --memory"
expect 2 "create without --workload" -- $C db --memory 1G && has err "missing --workload" "create without --workload"
expect 2 "create with two names" -- $C db db2 --memory 1G --workload idle
expect 2 "create bad workload" -- $C db --memory 1G --workload nope && has err "idle, memtouch, kvstore" "bad workload"
expect 2 "create bad backing" -- $C db --memory 1G --workload idle --backing 2m
expect 2 "create bad pattern" -- $C db --memory 1G --workload memtouch --pattern zigzag
expect 2 "create bad vcpus" -- $C db --memory 1G --workload idle --vcpus two && has err "vcpus" "bad vcpus"
expect 2 "create zero vcpus" -- $C db --memory 1G --workload idle --vcpus 0
expect 2 "create negative seed" -- $C db --memory 1G --workload idle --seed -1
expect 2 "create put-pct > 100" -- $C db --memory 1G --workload kvstore --put-pct 101
expect 2 "create hot-pct junk" -- $C db --memory 1G --workload kvstore --hot-pct 9x
expect 2 "create empty memory" -- $C db --memory "" --workload idle
expect 2 "create missing value" -- $C db --workload idle --memory
}

# No daemon: exit 1, says where it looked and how to start one.
check_dead() {
	has err "memvisor: memvisord is not running at $SOCK" "$1"
	has err "memvisor daemon" "$1"
	empty out "$1"
}
expect 1 "dead socket (--socket first)" -- --socket "$SOCK" vm ls && check_dead "--socket first"
expect 1 "dead socket (--socket last)" -- host --socket "$SOCK" && check_dead "--socket last"
expect 1 "dead socket (--socket=)" -- vm show x --socket="$SOCK" && check_dead "--socket="
expect 1 "dead socket (verify)" -- --socket "$SOCK" vm verify x && check_dead "verify"
expect 1 "dead socket (create)" -- --socket "$SOCK" vm create db -m 1G -w idle && check_dead "create"
expect 1 "dead socket (metrics)" -- --socket "$SOCK" metrics && check_dead "metrics"
export MEMVISOR_SOCKET="$SOCK"
expect 1 "dead socket (MEMVISOR_SOCKET)" -- vm ls && check_dead "MEMVISOR_SOCKET"
# --socket wins over the environment.
expect 1 "--socket beats env" -- --socket "$TMP/other.sock" vm ls \
	&& has err "not running at $TMP/other.sock" "--socket beats env"
unset MEMVISOR_SOCKET
# Something that is not a socket.
: >"$TMP/plain"
expect 1 "not a socket" -- --socket "$TMP/plain" vm ls && has err "not a socket" "not a socket"

if [ "$fails" -ne 0 ]; then
	echo "cli_usage: $fails of $n checks failed"
	exit 1
fi
echo "cli_usage: all $n checks passed"
exit 0
