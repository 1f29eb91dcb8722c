#!/bin/bash
# guard.sh: the side-channel guard on real VMs. A tenant marks a range of g1
# sensitive: the VMM locks it, the daemon resolves its host frames (checked
# against SQLite's protected_frames and the range's resident pages). g1 and g2
# hold identical content and opt in to fusion: once their pages fuse, the
# guard reports g2 as co-resident (fused, same frame); with 2 cache colours
# the opted-out VM g3 shows up by colour. Findings reach /metrics and the log.
# Bad input answers 4xx JSON naming the field; ranges survive a daemon
# restart; removing one unlocks it; workloads verify throughout.
. "$(dirname "$0")/lib.sh"

start_daemon --fusion-rate 200000 --guard-colours 2
PAGES=2048   # 8M of wss
# 8 s a pass, and the second pass reaches the range (page 1536) 6 s after
# the first ends: the pause below (the ops counter is sampled once a second)
# lands long before, even on a loaded machine, so g1 and g2 stop with the
# same bytes in the range.
common="--memory 32M --workload memtouch --seed 11 --wss 8M --pattern seq --rate 250"
mv vm create g1 $common --fusion >/dev/null
mv vm create g2 $common --fusion >/dev/null
mv vm create g3 $common >/dev/null
ops() { vm_field "$1" '["stats"]["ops_done"]'; }
one_pass() { [ "$(ops "$1")" -ge $PAGES ]; }
for vm in g1 g2 g3; do
  wait_for 60 one_pass $vm || fail "$vm did not write its working set"
  mv vm pause $vm >/dev/null
done

# Near the end of the working set: the second pass, which may have begun
# before the pause, rewrites the first pages, not these.
log "mark 1M of g1 sensitive"
out=$(mv vm sensitive add g1 --gpa 6M --len 1M --json) || fail "sensitive add"
id=$(jget "j['id']" <<<"$out")
[ "$(jget "j['resident_pages']" <<<"$out")" -eq 256 ] || fail "not every page resolved: $out"
[ "$(jget "j['locked']" <<<"$out")" = True ] || fail "range not locked: $out"
[ "$(jget "j['runs_total']" <<<"$out")" -ge 1 ] || fail "no frames: $out"
pid=$(vm_field g1 '["pid"]')
grep -q "mv-g1-ram" /proc/$pid/maps || fail "no guest RAM mapping in the VMM"
python3 - "$STATE/memvisor.db" "$id" <<'PY' || fail "protected frames not in SQLite"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
n, = db.execute("SELECT SUM(pages) FROM protected_frames WHERE range_id=?", (int(sys.argv[2]),)).fetchone()
assert n == 256, n
assert db.execute("SELECT gpa, len FROM sensitive WHERE id=?", (int(sys.argv[2]),)).fetchone() == (6 << 20, 1 << 20)
PY
mv vm sensitive ls g1 | grep -q "yes" || fail "sensitive ls"

log "bad input"
expect_4xx() { # STATUS FIELD METHOD PATH [BODY]
  local want=$1 field=$2; shift 2
  local res; res=$(api "$@")
  [ "${res%% *}" = "$want" ] || fail "$* -> $res (want $want)"
  [ "$(jget "j['error']['field']" <<<"${res#* }")" = "$field" ] || fail "$* -> $res (want field $field)"
}
expect_4xx 400 gpa POST /v1/vms/g1/sensitive '{"gpa":1,"len":4096}'
expect_4xx 400 len POST /v1/vms/g1/sensitive '{"gpa":0}'
expect_4xx 400 len POST /v1/vms/g1/sensitive '{"gpa":0,"len":"1M"}'
expect_4xx 400 bogus POST /v1/vms/g1/sensitive '{"gpa":0,"len":4096,"bogus":1}'
expect_4xx 400 gpa POST /v1/vms/g1/sensitive '{"gpa":1073741824,"len":4096}'
expect_4xx 409 gpa POST /v1/vms/g1/sensitive '{"gpa":6295552,"len":4096}'
expect_4xx 400 id DELETE /v1/vms/g1/sensitive/abc
expect_4xx 404 id DELETE /v1/vms/g1/sensitive/999
res=$(api POST /v1/vms/nope/sensitive '{"gpa":0,"len":4096}'); [ "${res%% *}" = 404 ] || fail "unknown vm: $res"
mv vm sensitive add g1 --gpa 0x1000 2>/dev/null && fail "add without --len accepted"

log "fusion puts g2's data on g1's sensitive frames"
fused_finding() {
  mv guard status --json | jget "any(f['kind']=='fused' and f['vm']=='g1' and f['other_vm']=='g2' and f['pages']>=200 for f in j['findings'])" | grep -q True
}
wait_for 30 fused_finding || fail "no fused finding: $(mv guard status --json) / $(mv fusion status --json) / $(mv vm show g1 --json)"
g=$(mv guard status --json)
log "guard: $g"
jget "any(f['kind']=='frame' and f['other_vm']=='g2' for f in j['findings'])" <<<"$g" | grep -q True || fail "no same-frame finding"
jget "any(f['kind']=='colour' and f['other_vm']=='g3' for f in j['findings'])" <<<"$g" | grep -q True || fail "no colour finding for g3"
jget "all(f['other_vm']!='g1' for f in j['findings'])" <<<"$g" | grep -q True || fail "g1 flagged against itself"
mv guard status | grep -q "g2 co-resident (fused)" || fail "guard status text"
mv metrics | grep -q 'memvisor_guard_findings{kind="fused"} [1-9]' || fail "no guard metrics"
mv metrics | grep -q 'memvisor_guard_events_total{kind="fused"} [1-9]' || fail "no guard events"
# The guard accounts for its own CPU time (checks ran with a range set).
cpu=$(mv metrics | awk '/^memvisor_guard_cpu_seconds_total / {print $2}')
python3 -c "import sys; sys.exit(0 if 0 < float(sys.argv[1]) < 60 else 1)" "${cpu:-0}" ||
  fail "memvisor_guard_cpu_seconds_total is '${cpu}'"
[ "$(mv guard status --json | jget 'j["cpu_s"] > 0')" = True ] || fail "guard status without cpu_s"
grep -q "guard: vm g2's data is co-resident (fused)" "$T/daemon.log" || fail "no guard event in the log"
for vm in g1 g2 g3; do mv vm verify $vm >/dev/null || fail "verify $vm"; done

log "ranges and the guard policy survive a daemon restart"
mv guard policy set --action log --sa-windows 16 --deny probe=0011223344556677 >/dev/null ||
  fail "policy set"
kill9_daemon
start_daemon --fusion-rate 200000 --guard-colours 2
mv guard policy --json | jget "j['action']=='log' and j['sampled_access']['windows']==16 and
  [d['xxh3'].lower() for d in j['deny']]==['0011223344556677'] and j['detect']" | grep -q True ||
  fail "guard policy lost across restart: $(mv guard policy --json)"
[ "$(mv vm sensitive ls g1 --json | jget "len(j['ranges'])")" -eq 1 ] || fail "range lost across restart"
[ "$(mv guard status --json | jget "j['protected_pages']")" -eq 256 ] || fail "frames not re-resolved"

log "remove the range"
mv vm sensitive rm g1 "$id" || fail "sensitive rm"
[ "$(mv vm sensitive ls g1 --json | jget "len(j['ranges'])")" -eq 0 ] || fail "range still listed"
[ "$(mv guard status --json | jget "len(j['findings'])")" -eq 0 ] || fail "findings without ranges"
for vm in g1 g2 g3; do mv vm verify $vm >/dev/null || fail "verify $vm"; mv vm stop $vm >/dev/null; done
term_daemon
log "ok"
