#!/usr/bin/env bash
# Every route in docs/api/openapi.yaml answers on a real daemon (not 404/405,
# and with the status the spec lists for a good request).
. "$(dirname "$0")/lib.sh"
spec=$(dirname "$0")/../../docs/api/openapi.yaml

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
  case "$method $path" in
    "DELETE /v1/vms/{vm}") continue ;;     # last, below
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
log "ok"
