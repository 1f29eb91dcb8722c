#!/bin/bash
# guard_move.sh: the guard's "move" response on a victim whose sensitive range
# holds ordinary pages (its memtouch working set, unique, rewritten all the
# time: moved by splice + punch + rewrite) and fused ones (zero pages past it,
# populated by mlock and fused with an attacker's): after the move every
# protected frame changed and none of the new ones is an old one (pagemap, as
# root), verify passes, the VM runs on and its writes land in its memfd, and
# the daemon's recorded range (API, SQLite) names the new frames. The attacker
# is found by the deny list (the zero page's hash): the move's victim is the
# VM the denied page is fused with that has a sensitive range; with none, the
# response falls back to unfuse. The moved pages never fuse again, also after
# an upgrade, a local hot migration and a daemon restart (the zero pages'
# twins stay fused in the attacker meanwhile).
. "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)

start_daemon --fusion-rate 200000
RANGE=$((2 << 20))   # 256 working-set pages + 256 zero pages (a whole 2 MiB: THP)
gm() { python3 "$here/guestmem.py" "$1" "$(vm_field "$2" '["pid"]')" "$2" 0 "$RANGE"; }
fused() { vm_field "$1" '["fusion"]["fused_pages"]'; }
scans() { mv fusion status --json | jget "j['full_scans']"; }
# Populates n zero pages of vm outside any sensitive range: mlock (a range
# marked) populates them, and they stay when the range is removed.
zero_pages() { # vm gpa len
  local id
  id=$(mv vm sensitive add "$1" --gpa "$2" --len "$3" --json | jget "j['id']")
  mv vm sensitive rm "$1" "$id" >/dev/null
}

mv vm create victim --memory 32M --workload memtouch --seed 11 --wss 1M --pattern seq --rate 2000 --fusion >/dev/null
mv vm create att --memory 32M --workload idle --fusion >/dev/null
written() { [ "$(vm_field victim '["stats"]["ops_done"]')" -ge 512 ]; }
wait_for 30 written || fail "the victim did not write its working set twice"
zero_pages att 4M 512K
mv vm sensitive add victim --gpa 0 --len "$RANGE" >/dev/null
both_fused() { [ "$(fused victim)" -ge 128 ] && [ "$(fused att)" -ge 128 ]; }
wait_for 30 both_fused || fail "zero pages did not fuse: victim $(fused victim), att $(fused att)"
log "victim: $(fused victim) fused pages in its range of $((RANGE / 4096)); att: $(fused att)"
# Ordinary (memfd) and fused (pool) pages side by side in the range.
pid=$(vm_field victim '["pid"]')
kinds=$(python3 - "$pid" "$RANGE" <<'PY'
import sys
pid, n = sys.argv[1], int(sys.argv[2])
base = None
vmas = []
for line in open(f"/proc/{pid}/maps"):
    f = line.split()
    s, e = (int(x, 16) for x in f[0].split("-"))
    name = f[5] if len(f) >= 6 else ""
    if name.startswith("/memfd:mv-victim-ram0") and base is None:
        base = s - int(f[2], 16)
    vmas.append((s, e, name))
memfd = pool = 0
for s, e, name in vmas:
    lo, hi = max(s, base), min(e, base + n)
    if hi > lo:
        pages = (hi - lo) // 4096
        if name.startswith("/memfd:mv-victim-ram"):
            memfd += pages
        elif name.startswith("/memfd:mv-fusion-pool"):
            pool += pages
print(memfd, pool)
PY
)
log "range pages mapped from the memfd / the fusion pool: $kinds"
[ "${kinds% *}" -ge 200 ] && [ "${kinds#* }" -ge 32 ] || fail "the range is not mixed: $kinds"
frames() { protected_frames "$STATE/memvisor.db" "$(vm_field victim '["id"]')"; }
# Freshly fused pages are mapped but not yet faulted in: the guard's check
# (every second) mlocks the range again, which populates them.
all_resident() {
  gm pfns victim >"$T/before.json"
  [ "$(jget 'len(j)' <"$T/before.json")" -eq $((RANGE / 4096)) ]
}
wait_for 10 all_resident || fail "range not all resident: $(jget 'len(j)' <"$T/before.json") pages"

log "deny list (the zero page), action move: the victim is the sharer with a sensitive range"
zero=$(head -c 4096 /dev/zero | "$MV_BUILD/tests/integration/page_hash")
mv guard policy set --action move --deny "zero page=$zero" >/dev/null
ev() { mv guard events --json | jget "__import__('json').dumps([e for e in j['events'] if e['suspect']=='$1'])"; }
moved() { ev att | jget "any(e['signal']=='deny_hash' and e['outcome'].startswith('ok') for e in j)" | grep -q True; }
wait_for 30 moved || fail "no deny-list move: $(mv guard events)"
e=$(ev att | jget "__import__('json').dumps(j[0])")
log "event: $e"
[ "$(jget "j['victim']" <<<"$e")" = victim ] || fail "the move's victim is not the sharer with the range: $e"
jget "j['outcome']" <<<"$e" | grep -q "pages of vm victim moved" || fail "outcome: $e"
[ "$(ev victim | jget 'len(j)')" -eq 0 ] || fail "the victim became a suspect: $(ev victim)"
[ "$(vm_field att '["fusion"]["excluded"]')" = False ] || fail "move must not unfuse the suspect"

log "every protected frame changed, none to an old one"
gm pfns victim >"$T/after.json"
python3 - "$T/before.json" "$T/after.json" <<'PY' || fail "frames did not all change"
import json, sys
b, a = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert b.keys() == a.keys(), (len(b), len(a))
same = [g for g in b if b[g] == a[g]]
assert not same, f"{len(same)} pages kept their frame, e.g. {[(hex(int(g)), b[g]) for g in same[:3]]}, gpas {hex(min(map(int, same)))}..{hex(max(map(int, same)))}"
reused = set(a.values()) & set(b.values())
assert not reused, f"{len(reused)} new frames were old ones: {sorted(reused)[:4]}"
assert len(set(a.values())) == len(a), "two pages on one frame after the move"
print(f"{len(a)} pages: {len(set(b.values()))} old frames, {len(a)} new, none shared")
PY
log "the daemon's recorded range names the new frames (API and SQLite)"
recorded() {
  mv guard status >/dev/null   # a check re-resolves the range
  gm pfns victim >"$T/now.json"
  frames >"$T/db.json"
  mv vm sensitive ls victim --json >"$T/api.json"
  python3 - "$T/now.json" "$T/db.json" "$T/api.json" <<'PY'
import json, sys
now, db, api = (json.load(open(p)) for p in sys.argv[1:])
r = (api["ranges"] if isinstance(api, dict) else api)[0]
fromapi = {str(x["gpa"] + i * 4096): x["pfn"] + i for x in r["runs"] for i in range(x["pages"])}
assert db == now, "SQLite differs from pagemap"
assert all(now.get(g) == p for g, p in fromapi.items()), "API run differs from pagemap"
if r["runs_total"] <= len(r["runs"]):
    assert fromapi == now, "API runs do not cover the range"
print(f"{len(now)} pages in {r['runs_total']} runs agree")
PY
}
wait_for 10 recorded || fail "recorded frames do not match pagemap"
mv vm verify victim >/dev/null || fail "verify victim after the move"
for vm in victim att; do [ "$(vm_field $vm '["state"]')" = running ] || fail "$vm not running"; done
log "the victim's writes land in its memfd"
mv vm pause victim >/dev/null
s1=$(gm same victim)
mv vm resume victim >/dev/null
[ "$(jget "j['differ']" <<<"$s1")" -eq 0 ] || fail "memfd and guest mapping differ: $s1"
ops=$(vm_field victim '["stats"]["ops_done"]')
progress() { [ "$(vm_field victim '["stats"]["ops_done"]')" -ge $((ops + 512)) ]; }
wait_for 30 progress || fail "the victim makes no progress after the move"
mv vm pause victim >/dev/null
s2=$(gm same victim)
mv vm resume victim >/dev/null
[ "$(jget "j['differ']" <<<"$s2")" -eq 0 ] || fail "memfd and guest mapping differ later: $s2"
[ "$(jget "j['digest']" <<<"$s1")" != "$(jget "j['digest']" <<<"$s2")" ] ||
  fail "the victim's writes did not reach its memfd"
mv vm verify victim >/dev/null || fail "verify victim later"

never_fused() { # the moved pages stay out of fusion while their twins fuse
  local s0; s0=$(scans)
  two_scans() { [ "$(scans)" -ge $((s0 + 2)) ]; }
  wait_for 60 two_scans || fail "$1: the scanner made no full scans"
  [ "$(fused victim)" -eq 0 ] || fail "$1: $(fused victim) moved pages fused again"
  [ "$(fused att)" -ge 128 ] || fail "$1: the zero pages' twins are not fused ($(fused att)): proves nothing"
  mv vm verify victim >/dev/null || fail "$1: verify victim"
  log "$1: victim 0 fused pages after 2 full scans, att $(fused att)"
}
never_fused "after the move"

log "deny list without a victim to move: the suspect is unfused instead"
mv vm create lone --memory 32M --workload idle --fusion >/dev/null
zero_pages lone 4M 512K
fb() { ev lone | jget "any(e['signal']=='deny_hash' and e['action']=='move' and 'unfused the suspect instead' in e['outcome'] for e in j)" | grep -q True; }
wait_for 30 fb || fail "no fallback to unfuse: $(mv guard events)"
mv guard events | grep lone
[ "$(vm_field lone '["fusion"]["excluded"]')" = True ] || fail "lone not excluded from fusion"
[ "$(fused lone)" -eq 0 ] || fail "lone still has fused pages"
log "upgrade: a new VMM gets the marks from the daemon"
cp "$MV_BUILD/src/vmm/memvisor-vmm" "$T/memvisor-vmm-v2"
old=$(vm_field victim '["pid"]')
mv upgrade --vmm "$T/memvisor-vmm-v2" >/dev/null || fail "upgrade"
[ "$(vm_field victim '["pid"]')" != "$old" ] || fail "victim still on VMM $old"
# marked [N]: the daemon sent the victim's current VMM its marks (N times)
marked() { [ "$(grep -c "vm victim: guard: $((RANGE / 4096)) moved page(s) at gpa 0x0 kept out of fusion in VMM pid $(vm_field victim '["pid"]')\$" "$T/daemon.log")" -ge "${1:-1}" ]; }
wait_for 10 marked || fail "the new VMM was not sent the marks"
never_fused "after the upgrade"

log "local hot migration"
mv vm migrate victim --local >/dev/null || fail "migrate victim"
wait_for 10 marked || fail "the migrated VMM was not sent the marks"
never_fused "after the hot migration"

log "daemon restart: the marks, the events and the suspects come back from SQLite"
evs() { mv guard events --json | jget "sorted((e['id'], e['suspect'], e['signal'], e['outcome']) for e in j['events'])"; }
before=$(evs)
kill9_daemon
start_daemon --fusion-rate 200000
wait_for 10 marked 2 || fail "the re-adopted VMM was not sent the marks"
[ "$(evs)" = "$before" ] || fail "events after the restart: $(evs), before: $before"
[ "$(vm_field lone '["fusion"]["excluded"]')" = True ] || fail "lone back in fusion after the restart"
never_fused "after the daemon restart"   # two full scans: att and lone judged again if forgotten
[ "$(fused lone)" -eq 0 ] || fail "lone fused again after the restart"
[ "$(evs)" = "$before" ] || fail "detected again after the restart: $(evs), before: $before"
log "events after the restart: $before"
mv vm rm --force lone >/dev/null

log "migration to another host: the marks and the sensitive range go along"
PORT=$(free_port)
start_daemon_b "$PORT" --fusion-rate 200000
mv vm migrate victim --to "127.0.0.1:$PORT" >/dev/null || fail "migrate victim to b"
mvb vm verify victim >/dev/null || fail "verify victim at b"
kept_b() { python3 - "$B_STATE/memvisor.db" <<'PY'
import sqlite3, sys
print(sorted(r for r in sqlite3.connect(sys.argv[1]).execute("SELECT gpa, len FROM guard_kept")))
PY
}
[ "$(kept_b)" = "[(0, $RANGE)]" ] || fail "marks at b: $(kept_b)"
marked_b() { grep -q "vm victim: guard: $((RANGE / 4096)) moved page(s) at gpa 0x0 kept out of fusion" "$T/b.log"; }
wait_for 10 marked_b || fail "b did not send the victim's VMM its marks"
[ "$(mvb vm sensitive ls victim --json | jget "[(r['gpa'], r['len'], r['locked']) for r in j['ranges']]")" = "[(0, $RANGE, True)]" ] ||
  fail "the victim's sensitive range at b: $(mvb vm sensitive ls victim)"
mv vm rm victim >/dev/null
log "ok"
