#!/usr/bin/env bash
# A 64 GiB guest on a host with less RAM: sparse guest memory costs only the
# pages the workload touches; the daemon admits it under an explicit capacity.
. "$(dirname "$0")/lib.sh"

start_daemon --mem-capacity 80G
mv vm create huge --memory 64G --vcpus 2 --workload memtouch --wss 32M --pattern seq >/dev/null
sleep 1
mv vm verify huge >/dev/null || fail "verify 64G guest"
res=$(mv vm show huge --json | jget 'j["stats"]["resident_bytes"]')
mem=$(mv vm show huge --json | jget 'j["memory"]')
[ "$mem" = $((64 << 30)) ] || fail "memory $mem"
[ "$res" -gt 0 ] && [ "$res" -lt $((256 << 20)) ] || fail "resident $res is not sparse"
log "64G guest resident: $res bytes"
got=$(api POST /v1/vms '{"name":"toomuch","memory":"17G","workload":{"kind":"idle"}}')
[ "${got%% *}" = 422 ] || fail "over-capacity VM not refused: $got"
grep -q "left" <<<"$got" || fail "refusal does not say what is left: $got"
mv vm rm huge --force
log "ok"
