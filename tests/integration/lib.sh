# Shared helpers for the integration tests: a private daemon on a temp socket
# and state dir, the CLI bound to it, JSON field extraction, and a cleanup
# that kills every process the test started (daemon, VMMs, their monitors).
# Needs: MV_BUILD (the build dir holding src/daemon/memvisord etc.).
set -euo pipefail

: "${MV_BUILD:?MV_BUILD must point at the build directory}"
MVD=$MV_BUILD/src/daemon/memvisord
MVCLI=$MV_BUILD/src/cli/memvisor
T=$(mktemp -d /tmp/mvit.XXXXXX)
SOCK=$T/api.sock
STATE=$T/state
DAEMON_PID=
export MEMVISOR_SOCKET=$SOCK

log() { echo "[$(date +%T)] $*" >&2; }
fail() { echo "FAIL: $*" >&2; [ -f "$T/daemon.log" ] && tail -30 "$T/daemon.log" >&2; exit 1; }

cleanup() {
  local rc=$?
  set +e
  eval "${EXTRA_CLEANUP:-}"   # a test's own processes (e.g. a second daemon)
  [ -n "$DAEMON_PID" ] && { kill -9 "$DAEMON_PID"; wait "$DAEMON_PID"; } 2>/dev/null || true
  pkill -9 -f -- "--ctl $STATE/" 2>/dev/null || true
  sleep 0.2
  eval "${LATE_CLEANUP:-}"    # once every VMM is gone (e.g. a hugetlb pool to give back)
  if [ $rc -ne 0 ] && [ -d "$STATE/vms" ]; then
    for f in "$STATE"/vms/*/vmm.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }; done
  fi
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT

start_daemon() { # extra daemon flags
  "$MVD" --socket "$SOCK" --state-dir "$STATE" "$@" >>"$T/daemon.log" 2>&1 &
  DAEMON_PID=$!
  for _ in $(seq 200); do
    [ -S "$SOCK" ] && curl -sf --unix-socket "$SOCK" http://localhost/v1/host >/dev/null && return 0
    kill -0 "$DAEMON_PID" 2>/dev/null || fail "daemon exited at start"
    sleep 0.05
  done
  fail "daemon did not answer on $SOCK"
}

kill9_daemon() { { kill -9 "$DAEMON_PID"; wait "$DAEMON_PID"; } 2>/dev/null || true; DAEMON_PID=; }

# Stops the daemon with SIGTERM; it must exit 0 (under ASan: without leaks).
term_daemon() {
  kill -TERM "$DAEMON_PID"
  local rc=0; wait "$DAEMON_PID" || rc=$?
  DAEMON_PID=
  [ $rc -eq 0 ] || fail "daemon exited $rc on SIGTERM"
}

mv() { "$MVCLI" "$@"; }

# jget EXPR: evaluates a Python expression over the JSON on stdin, bound to j.
jget() { python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"; }

# api METHOD PATH [BODY]: prints "STATUS BODY" for raw HTTP checks.
api() {
  local out
  if [ $# -ge 3 ]; then
    out=$(curl -s --unix-socket "$SOCK" -X "$1" -H 'Content-Type: application/json' \
      --data-binary "$3" -w '\n%{http_code}' "http://localhost$2")
  else
    out=$(curl -s --unix-socket "$SOCK" -X "$1" -w '\n%{http_code}' "http://localhost$2")
  fi
  echo "$(tail -n1 <<<"$out") $(head -n -1 <<<"$out")"
}

# wait_for SECONDS CMD...: polls until CMD succeeds.
wait_for() {
  local secs=$1; shift
  for _ in $(seq $((secs * 10))); do "$@" && return 0; sleep 0.1; done
  return 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_daemon_b PORT [flags]: a second daemon ("another host") listening for
# migrations on 127.0.0.1:PORT; mvb is the CLI bound to it. Killed at exit.
B_SOCK=$T/b.sock
B_STATE=$T/b-state
start_daemon_b() {
  local port=$1; shift
  "$MVD" --socket "$B_SOCK" --state-dir "$B_STATE" --migrate-listen "127.0.0.1:$port" "$@" \
    >>"$T/b.log" 2>&1 &
  B_PID=$!
  EXTRA_CLEANUP='{ kill -9 $B_PID; wait $B_PID; } 2>/dev/null; pkill -9 -f -- "--ctl $B_STATE/" 2>/dev/null'
  wait_for 10 test -S "$B_SOCK" || fail "second daemon did not start"
}
mvb() { MEMVISOR_SOCKET=$B_SOCK "$MVCLI" "$@"; }

# hugetlb_pool PAGES: sets the host's 2 MiB hugetlb pool. Pages still
# reserved when it last shrank stay behind as free "surplus" pages until the
# count moves again, so it moves up by that many and back.
hugetlb_pool() {
  local f=/proc/sys/vm/nr_hugepages surp
  echo "$1" >$f
  surp=$(awk '/HugePages_Surp/ {print $2}' /proc/meminfo)
  [ "$surp" -eq 0 ] || { echo $(($1 + surp)) >$f; echo "$1" >$f; }
}

vm_field() { mv vm show "$1" --json | jget "j$2"; }

# protected_frames DB VM_ID: gpa -> pfn of every protected page of a VM, as
# the daemon recorded them in its SQLite (JSON object, gpa keys as strings).
protected_frames() {
  python3 - "$1" "$2" <<'PY'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
m = {}
for gpa, pfn, pages in db.execute("SELECT f.gpa, f.pfn, f.pages FROM protected_frames f JOIN sensitive s"
                                  " ON s.id = f.range_id WHERE s.vm_id=?", (sys.argv[2],)):
    for i in range(pages):
        m[gpa + i * 4096] = pfn + i
print(json.dumps(m))
PY
}
