#!/usr/bin/env bash
# Hot migration and VMM live upgrade on one host: the new VMM maps the same
# physical frames (pagemap PFNs before == after), workloads verify, and a
# broken binary or one that crashes right after taking over leaves every VM
# on its old VMM, unharmed.
. "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
crashy=$MV_BUILD/tests/integration/memvisor-vmm-crash-after-setup

start_daemon --mem-capacity 16G
mv vm create small --memory 1G --workload memtouch --wss 64M --pattern seq >/dev/null
mv vm create big --memory 8G --vcpus 2 --workload kvstore --wss 128M --rate 50000 >/dev/null
sleep 1

pfns() { python3 "$here/pfns.py" "$(vm_field "$1" '["pid"]')" "$1"; }
same_frames() { # before.json after.json: every page present in both has one PFN
  python3 - "$1" "$2" <<'PY'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
common = set(a) & set(b)
moved = [k for k in common if a[k] != b[k]]
print(f"{len(common)} pages in both, {len(moved)} moved")
sys.exit(0 if len(common) >= 4096 and not moved else 1)
PY
}

log "hot migration: same physical frames in the new VMM"
pfns small >"$T/before.json"; old=$(vm_field small '["pid"]')
mv vm migrate small --local --json >"$T/ho.json" || fail "migrate small"
new=$(vm_field small '["pid"]')
[ "$new" != "$old" ] && ! kill -0 "$old" 2>/dev/null || fail "old VMM $old still there / pid unchanged"
sleep 0.5
pfns small >"$T/after.json"
same_frames "$T/before.json" "$T/after.json" || fail "frames changed across the hand-over"
python3 -c "import json; r=json.load(open('$T/ho.json')); assert r['ok'] and r['new_pid'] == $new, r" ||
  fail "bad hand-over answer: $(cat "$T/ho.json")"
mv vm verify small >/dev/null || fail "verify small after hand-over"

log "upgrade: every VM to a new binary"
cp "$MV_BUILD/src/vmm/memvisor-vmm" "$T/memvisor-vmm-v2"
pids=$(mv vm ls --json | jget '" ".join(str(v["pid"]) for v in j["vms"])')
mv upgrade --vmm "$T/memvisor-vmm-v2" >/dev/null || fail "upgrade"
for vm in small big; do
  mv vm verify $vm >/dev/null || fail "verify $vm after upgrade"
  exe=$(readlink "/proc/$(vm_field $vm '["pid"]')/exe")
  [ "$exe" = "$T/memvisor-vmm-v2" ] || fail "$vm runs $exe"
done
newpids=$(mv vm ls --json | jget '" ".join(str(v["pid"]) for v in j["vms"])')
[ "$pids" != "$newpids" ] || fail "pids unchanged by upgrade"

log "upgrade to a binary that does not start: VMs stay"
printf '#!/bin/sh\necho broken >&2\nexit 3\n' >"$T/broken"; chmod +x "$T/broken"
mv upgrade --vmm "$T/broken" 2>/dev/null && fail "upgrade to a broken binary succeeded"
[ "$(mv vm ls --json | jget '" ".join(str(v["pid"]) for v in j["vms"])')" = "$newpids" ] ||
  fail "a VM moved despite the broken binary"

log "upgrade to a binary that crashes right after taking over: VMs stay, unharmed"
mv upgrade --vmm "$crashy" --json >"$T/up.json" && fail "upgrade to a crashing binary succeeded"
grep -q "stays on VMM" "$T/up.json" || fail "no rollback message: $(cat "$T/up.json")"
[ "$(mv vm ls --json | jget '" ".join(str(v["pid"]) for v in j["vms"])')" = "$newpids" ] ||
  fail "a VM moved despite the crash"
sleep 0.5
for vm in small big; do
  [ "$(vm_field $vm '["state"]')" = running ] || fail "$vm not running after rollback"
  mv vm verify $vm >/dev/null || fail "verify $vm after rollback"
done

log "bad requests"
got=$(api POST /v1/upgrade '{"vmm":"relative/path"}'); [ "${got%% *}" = 400 ] || fail "$got"
got=$(api POST /v1/upgrade '{"vmm":"/nonexistent"}'); [ "${got%% *}" = 400 ] || fail "$got"
got=$(api POST /v1/vms/small/migrate '{"local":false}'); [ "${got%% *}" = 400 ] || fail "$got"
got=$(api POST /v1/vms/nosuch/migrate '{"local":true}'); [ "${got%% *}" = 404 ] || fail "$got"

log "the re-adopted VM after a daemon restart is the upgraded one"
kill9_daemon; start_daemon --mem-capacity 16G
[ "$(mv vm ls --json | jget '" ".join(str(v["pid"]) for v in j["vms"])')" = "$newpids" ] ||
  fail "re-adoption lost the hand-over"
mv vm migrate big --local >/dev/null || fail "hand-over after re-adoption"
mv vm verify big >/dev/null || fail "verify big"
log "ok"
