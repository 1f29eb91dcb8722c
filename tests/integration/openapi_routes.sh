#!/usr/bin/env bash
# Every route in docs/api/openapi.yaml answers on a real daemon (not 404/405,
# and with the status the spec lists for a good request).
. "$(dirname "$0")/lib.sh"
spec=$(dirname "$0")/../../docs/api/openapi.yaml

SRC=$(cd "$(dirname "$0")/../.." && pwd)
# The image and container routes need a registry with an image in it.
port=$("$SRC/scripts/test-registry" start "$T/reg")
stop_all() {
  for d in "$STATE"/containers/*; do
    [ -f "$d/shim.pid" ] && kill -9 "$(cat "$d/shim.pid")" 2>/dev/null
    crun delete -f "mv-$(basename "$d")" 2>/dev/null
    mountpoint -q "$d/rootfs" 2>/dev/null && fusermount3 -u -z "$d/rootfs"
  done
  "$SRC/scripts/test-registry" stop "$T/reg"
}
EXTRA_CLEANUP=stop_all
"$SRC/scripts/make-test-image" "$T/img" "$port" test/routes:v1 >/dev/null
REF=127.0.0.1:$port/test/routes:v1
REF_ESC=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$REF")
start_daemon --mem-capacity 2G
mv vm create r1 --memory 64M --workload idle >/dev/null
# Routes in the spec: "  /path:" lines, then their methods.
python3 - "$spec" >"$T/routes" <<'PY'
import re, sys
path = None
for line in open(sys.argv[1]):
    m = re.match(r"^  (/\S*):\s*$", line)
    if m:
        path = m.group(1); continue
    m = re.match(r"^    (get|post|delete|put|patch):", line)
    if m and path:
        print(m.group(1).upper(), path)
    if re.match(r"^\S", line) and not line.startswith("paths"):
        path = None
PY
[ "$(wc -l <"$T/routes")" -ge 11 ] || fail "spec parse found too few routes"
order="GET POST"
while read -r method path; do
  p=${path//\{vm\}/r1}
  p=${p//\{id\}/1}   # the sensitive range the POST before it made
  p=${p//\{name\}/$REF_ESC}
  p=${p//\{ctr\}/k1}
  case "$method $path" in
    "DELETE /v1/vms/{vm}") continue ;;     # last, below
    "DELETE /v1/containers/{ctr}"|"DELETE /v1/images/{name}") continue ;;
    "POST /v1/images") body="{\"ref\":\"$REF\"}" ;;
    "POST /v1/containers") body="{\"image\":\"$REF\",\"name\":\"k1\",\"cmd\":[\"true\"]}" ;;
    "POST /v1/cache/prepopulate") body="{\"images\":[\"$REF\"]}" ;;
    "POST /v1/vms") body='{"name":"r2","memory":"64M","workload":{"kind":"idle"}}' ;;
    "POST /v1/vms/{vm}/migrate") body='{"local":true}' ;;
    "POST /v1/vms/{vm}/sensitive") body='{"gpa":0,"len":4096}' ;;
    "POST /v1/guard/policy") body='{"detect":true}' ;;
    "POST /v1/upgrade") body="{\"vmm\":\"$MV_BUILD/src/vmm/memvisor-vmm\"}" ;;
    *) body= ;;
  esac
  if [ -n "$body" ]; then got=$(api "$method" "$p" "$body"); else got=$(api "$method" "$p"); fi
  status=${got%% *}
  case "$status" in 2*) ;; *) fail "$method $path -> $status: ${got#* }" ;; esac
  log "$method $path -> $status"
done < <(grep -v ' /v1/vms/{vm}/stop$' "$T/routes"; grep ' /v1/vms/{vm}/stop$' "$T/routes")
got=$(api DELETE /v1/vms/r1); [ "${got%% *}" = 204 ] || fail "DELETE /v1/vms/{vm} -> $got"
# The image goes once its container is gone and the cache job has ended.
wait_for 120 sh -c "! curl -s --unix-socket '$SOCK' http://localhost/v1/cache | grep -q '\"state\":\"running\"'" ||
  fail "prepopulate still running"
got=$(api DELETE /v1/containers/k1); [ "${got%% *}" = 204 ] || fail "DELETE /v1/containers/{ctr} -> $got"
got=$(api DELETE "/v1/images/$REF_ESC"); [ "${got%% *}" = 204 ] || fail "DELETE /v1/images/{name} -> $got"
log "ok"
