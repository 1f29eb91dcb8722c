#!/usr/bin/env bash
# Every class of bad input gets a 4xx with a JSON error naming the field, the
# daemon stays up and a running VM is not touched.
. "$(dirname "$0")/lib.sh"

start_daemon --mem-capacity 4G
mv vm create keep --memory 256M --workload kvstore --wss 8M --rate 5000 >/dev/null
ops0=$(mv vm verify keep --json | jget 'j["ops_done"]')

# expect STATUS FIELD METHOD PATH [BODY]
expect() {
  local want=$1 field=$2; shift 2
  local got; got=$(api "$@")
  local status=${got%% *} body=${got#* }
  [ "$status" = "$want" ] || fail "$* -> $status (want $want): $body"
  python3 - "$body" "$field" <<'PY' || fail "$* -> bad error body: $body"
import json, sys
e = json.loads(sys.argv[1])["error"]
assert e["message"], "empty message"
assert e["status"] >= 400
if sys.argv[2] != "-":
    assert e["field"] == sys.argv[2], f"field {e['field']!r} != {sys.argv[2]!r}"
PY
}

good='"workload":{"kind":"idle"}'
expect 400 - POST /v1/vms '{"name":"x",'
expect 400 - POST /v1/vms '[1,2]'
expect 400 - POST /v1/vms ''
expect 400 bogus POST /v1/vms "{\"name\":\"a\",\"memory\":4096,$good,\"bogus\":1}"
expect 400 workload.bogus POST /v1/vms '{"name":"a","memory":4096,"workload":{"kind":"idle","bogus":1}}'
expect 400 name POST /v1/vms "{\"name\":5,\"memory\":4096,$good}"
expect 400 name POST /v1/vms "{\"name\":\"Bad Name!\",\"memory\":4096,$good}"
expect 400 name POST /v1/vms "{\"memory\":4096,$good}"
expect 400 memory POST /v1/vms "{\"name\":\"a\",\"memory\":\"lots\",$good}"
expect 400 memory POST /v1/vms "{\"name\":\"a\",\"memory\":0,$good}"
expect 400 memory POST /v1/vms "{\"name\":\"a\",\"memory\":1000,$good}"
expect 400 memory POST /v1/vms "{\"name\":\"a\",\"memory\":-4096,$good}"
expect 400 memory POST /v1/vms "{\"name\":\"a\",\"memory\":1.5,$good}"
expect 400 memory POST /v1/vms "{\"name\":\"a\",\"memory\":\"99999T\",$good}"
expect 422 memory POST /v1/vms "{\"name\":\"a\",\"memory\":\"64G\",$good}"
expect 400 vcpus POST /v1/vms "{\"name\":\"a\",\"memory\":4096,\"vcpus\":0,$good}"
expect 400 vcpus POST /v1/vms "{\"name\":\"a\",\"memory\":4096,\"vcpus\":\"2\",$good}"
expect 400 backing POST /v1/vms "{\"name\":\"a\",\"memory\":4096,\"backing\":\"floppy\",$good}"
expect 400 backing POST /v1/vms "{\"name\":\"a\",\"memory\":4096,\"backing\":\"hugetlb\",\"fusion\":true,$good}"
expect 400 workload.kind POST /v1/vms '{"name":"a","memory":4096,"workload":{"kind":"bitcoin"}}'
expect 400 workload POST /v1/vms '{"name":"a","memory":4096}'
expect 400 workload.rate POST /v1/vms '{"name":"a","memory":4096,"workload":{"kind":"memtouch","rate":-1}}'
expect 400 workload.pattern POST /v1/vms '{"name":"a","memory":4096,"workload":{"kind":"memtouch","pattern":"zigzag"}}'
expect 400 workload.wss POST /v1/vms '{"name":"a","memory":"1M","workload":{"kind":"memtouch","wss":"2M"}}'
expect 400 workload.put_pct POST /v1/vms '{"name":"a","memory":"1M","workload":{"kind":"kvstore","put_pct":101}}'
expect 400 - POST /v1/vms '{"name":"a","name":"b","memory":4096,"workload":{"kind":"idle"}}'
expect 409 name POST /v1/vms "{\"name\":\"keep\",\"memory\":4096,$good}"
big=$(python3 -c 'print("{\"name\":\"" + "a"*70000 + "\"}")')
expect 413 - POST /v1/vms "$big"
expect 404 - GET /v1/vms/nosuchvm
expect 404 - POST /v1/vms/nosuchvm/pause
expect 404 - POST /v1/vms/0123456789abcdef/verify
expect 404 - DELETE /v1/vms/nosuchvm
expect 404 - GET /v1/nothing
expect 405 - DELETE /v1/host
expect 405 - GET /v1/vms/keep/pause
expect 409 - POST /v1/vms/keep/resume
expect 409 - DELETE /v1/vms/keep
expect 400 - DELETE '/v1/vms/keep?force=maybe'

log "the daemon is alive and the VM untouched"
kill -0 "$DAEMON_PID" || fail "daemon died"
sleep 0.5
ops1=$(mv vm verify keep --json | jget 'j["ok"] and j["ops_done"]')
[ "$ops1" != False ] && [ "$ops1" -gt "$ops0" ] || fail "VM touched: $ops0 -> $ops1"
[ "$(mv vm ls --json | jget 'len(j["vms"])')" = 1 ] || fail "a bad request created a VM"
log "ok"
