#!/bin/bash
# guard_attacks.sh: real side-channel attacks between tenant VMs, scored, with
# the guard off and on. Benign VMs with fusion on (identical memtouch VMs with
# a sensitive range, kvstore, idle) raise no detection. Dedup write probe: the
# "writeprobe" VM guesses which of its pages equal the "secret" VM's secret
# page (which the victim marked sensitive) by timing writes; guard off it is
# right >= 90 % of the time; guard on
# it is detected (event naming it, the victim and the signal), unfused and
# excluded from fusion, and its later rounds score chance (within 3 sigma of
# 0.5). Flush+Reload: the "flushreload" VM times reloads of two public pages
# fused with the victim's, whose cache lines the victim touches by its secret
# bits; guard on, sampled accesses to the victim's sensitive pages expose it
# and it is unfused, and its later accuracy is chance. Guard off it must
# reach 0.75 while the host's CPUs share a cache (cache_probe tells; they are
# hypervisor vCPUs whose placement changes). Their vCPU threads are pinned to
# distinct CPUs.
. "$(dirname "$0")/lib.sh"

start_daemon --fusion-rate 200000
aux() { vm_field "$1" '["stats"]["workload_aux"]'; }
aux_i() { aux "$1" | jget "j[$2]"; }
nevents() { mv guard events --json | jget "len(j['events'])"; }
# acc_between "a b" "c d": (correct delta) / (guesses delta) as a float
acc() { python3 -c "import sys; a=list(map(int,sys.argv[1].split())); b=list(map(int,sys.argv[2].split())); print((b[1]-a[1]) and (b[2]-a[2])/(b[1]-a[1]))" "$1" "$2"; }
snap() { aux "$1" | jget "' '.join(map(str, j[:3]))"; }
within_chance() { # ACC N: |ACC - 0.5| <= 3 sigma of a fair coin over N guesses
  python3 -c "import sys,math; a=float(sys.argv[1]); n=int(sys.argv[2]); sys.exit(0 if abs(a-0.5) <= 3*math.sqrt(0.25/n) else 1)" "$1" "$2"
}
ge() { python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)" "$1" "$2"; }

log "benign: identical memtouch VMs (one with a sensitive range), kvstore, idle; fusion and guard on"
mv guard policy | grep -q "detect: *on" || fail "guard not on by default"
common="--memory 32M --workload memtouch --seed 3 --wss 8M --pattern seq --rate 1000 --fusion"
mv vm create b1 $common >/dev/null
mv vm create b2 $common >/dev/null
mv vm create b3 --memory 32M --workload kvstore --seed 5 --wss 4M --rate 2000 --fusion >/dev/null
mv vm create b4 --memory 32M --workload idle --fusion >/dev/null
mv vm sensitive add b1 --gpa 6M --len 1M >/dev/null
passes() { [ "$(vm_field b1 '["stats"]["ops_done"]')" -ge $((3 * 2048)) ]; }
wait_for 60 passes || fail "b1 did not rewrite its working set 3 times"
windows=$(mv metrics | awk '/memvisor_guard_sampled_windows_total\{touched="any"\}/ {print $2}')
shared=$(mv fusion status --json | jget "j['sharing']")
log "benign: $shared pages shared, $windows sampled windows"
[ "$(nevents)" -eq 0 ] || fail "false positive on benign VMs: $(mv guard events)"
[ "$shared" -gt 1000 ] || fail "benign VMs barely fused ($shared pages): the check proves nothing"
for vm in b1 b2 b3 b4; do mv vm verify $vm >/dev/null || fail "verify $vm"; mv vm rm --force $vm >/dev/null; done

log "dedup write probe, guard off"
mv guard policy set --detect off >/dev/null
mv vm create victim --memory 16M --workload secret --seed 7 --wss 64K --fusion >/dev/null
mv vm sensitive add victim --gpa 0 --len 4K >/dev/null   # the secret page
mv vm create att --memory 16M --workload writeprobe --seed 7 --wss 1M --fusion >/dev/null
rounds3() { [ "$(aux_i att 0)" -ge 3 ]; }
wait_for 60 rounds3 || fail "the write prober did not finish 3 rounds: $(aux att)"
a=$(acc "0 0 0" "$(snap att)")
log "write probe accuracy, guard off: $a over $(aux_i att 1) guesses"
ge "$a" 0.9 || fail "write probe accuracy $a < 0.9 with the guard off: the attack does not work"
[ "$(nevents)" -eq 0 ] || fail "detections while detection is off"

log "dedup write probe, guard on (unfuse)"
mv guard policy set --detect on --action unfuse >/dev/null
wp_event() { mv guard events --json | jget "any(e['signal']=='write_probe' and e['suspect']=='att' and e['victim']=='victim' and e['outcome']=='ok' for e in j['events'])" | grep -q True; }
wait_for 30 wp_event || fail "write probe not detected: $(mv guard events)"
mv guard events
e=$(mv guard events --json | jget "[e for e in j['events'] if e['signal']=='write_probe'][0]")
log "event: $e"
[ "$(vm_field att '["fusion"]["excluded"]')" = True ] || fail "att not excluded from fusion"
# Score whole rounds that began after the response: the round the detection
# interrupted (and the poller's lag) is skipped.
r0=$(aux_i att 0)
next() { [ "$(aux_i att 0)" -ge $((r0 + 2)) ]; }
wait_for 30 next || fail "no round after detection"
s1=$(snap att); r1=$(aux_i att 0)
[ "$(vm_field att '["fusion"]["fused_pages"]')" -eq 0 ] || fail "att still has fused pages"
more() { [ "$(aux_i att 0)" -ge $((r1 + 3)) ]; }
wait_for 60 more || fail "the prober stopped"
s2=$(snap att)
[ "$(vm_field att '["fusion"]["fused_pages"]')" -eq 0 ] || fail "att fused again after exclusion"
a=$(acc "$s1" "$s2")
n=$(( $(cut -d' ' -f2 <<<"$s2") - $(cut -d' ' -f2 <<<"$s1") ))
log "write probe accuracy after detection: $a over $n guesses (rounds $r1..$(cut -d' ' -f1 <<<"$s2"))"
within_chance "$a" "$n" || fail "write probe accuracy $a after detection is not chance"
mv metrics | grep -q 'memvisor_guard_detections_total{signal="write_probe",action="unfuse"} 1' ||
  fail "no detection in /metrics"
grep -q "guard: detected write_probe by vm att against vm victim" "$T/daemon.log" || fail "no log line"
mv vm verify victim >/dev/null || fail "verify victim"
mv vm verify att >/dev/null || fail "verify att"
mv vm rm --force att >/dev/null
mv vm rm --force victim >/dev/null

log "Flush+Reload, guard off"
mv guard policy set --detect off >/dev/null
mv vm create victim --memory 16M --workload secret --seed 9 --wss 64K --fusion >/dev/null
mv vm create fr --memory 16M --workload flushreload --seed 9 --wss 64K --fusion >/dev/null
mv vm sensitive add victim --gpa 0 --len 12K >/dev/null   # secret and public pages
# Cross-core Flush+Reload needs victim and attacker on two cores at once: pin
# their vCPU threads (named mv-vcpuN) to distinct CPUs when there are two.
vcpu_tid() { grep -l '^mv-vcpu0$' /proc/"$(vm_field "$1" '["pid"]')"/task/*/comm | head -1 | cut -d/ -f5; }
if [ "$(nproc)" -ge 2 ]; then
  taskset -pc 0 "$(vcpu_tid victim)" >/dev/null && taskset -pc 1 "$(vcpu_tid fr)" >/dev/null ||
    log "could not pin the vCPU threads"
fi
both_fused() { [ "$(vm_field fr '["fusion"]["fused_pages"]')" -ge 2 ]; }
wait_for 30 both_fused || fail "the public pages did not fuse"
fr_round() { [ "$(aux_i fr 0)" -ge 1 ]; }   # the calibration comes with the first round
wait_for 30 fr_round || fail "the Flush+Reload attacker did not finish a round"
cal=$(aux_i fr 3)
hit=$((cal >> 32)); miss=$((cal & 0xffffffff))
# Cross-core Flush+Reload works only while the two CPUs share a cache level,
# and this host's CPUs are hypervisor vCPUs whose placement (on AMD: the
# same L3 or not) changes by the minute. So each try also asks cache_probe
# whether a native thread on CPU 1 can see CPU 0's reads right now. The
# attack must succeed (>= 0.75) in some try; if it never does although the
# probe saw a shared cache in most tries, the attack or fusion is broken.
# Only when the host showed no shared cache is it reported, not failed.
oncpu() { echo $(( $(cut -d' ' -f1 /proc/"$(vm_field "$1" '["pid"]')"/task/"$2"/schedstat) )); }
tv=$(vcpu_tid victim) tf=$(vcpu_tid fr)
best=0 shared=0 tries=0
for try in 1 2 3 4 5 6 7 8; do
  s1=$(snap fr); c1v=$(oncpu victim "$tv"); c1f=$(oncpu fr "$tf"); t1=$(date +%s%N)
  sleep 3
  s2=$(snap fr); c2v=$(oncpu victim "$tv"); c2f=$(oncpu fr "$tf"); t2=$(date +%s%N)
  vis=$("$MV_BUILD/tests/integration/cache_probe" 0 1 300 | jget 'j["visible"]')
  a=$(acc "$s1" "$s2")
  n=$(( $(cut -d' ' -f2 <<<"$s2") - $(cut -d' ' -f2 <<<"$s1") ))
  sv=$(( (c2v - c1v) * 100 / (t2 - t1) )) sf=$(( (c2f - c1f) * 100 / (t2 - t1) ))
  log "Flush+Reload accuracy, guard off, try $try: $a over $n guesses (victim/attacker on CPU $sv/$sf %; calibration: hit $hit, miss $miss cycles; native cross-CPU visibility $vis)"
  tries=$try
  ge "$vis" 0.15 && shared=$((shared + 1))
  ge "$a" "$best" && best=$a
  ge "$best" 0.75 && break
done
if ge "$best" 0.75; then
  log "Flush+Reload accuracy, guard off: $best (the attack works)"
elif [ $((shared * 4)) -ge $((tries * 3)) ]; then
  fail "Flush+Reload accuracy, guard off, at most $best in $tries tries while CPUs 0 and 1 shared a cache in $shared of them"
else
  log "Flush+Reload, guard off: at most $best; CPUs 0 and 1 shared a cache in only $shared of $tries tries (hypervisor placement): not demonstrable on this host now"
fi

log "Flush+Reload, guard on: sampled accesses"
mv guard policy set --detect on --action unfuse >/dev/null
sa_event() { mv guard events --json | jget "any(e['signal']=='sampled_access' and e['suspect']=='fr' and e['victim']=='victim' and e['outcome']=='ok' for e in j['events'])" | grep -q True; }
wait_for 30 sa_event || fail "Flush+Reload not detected: $(mv guard events) $(mv metrics | grep sampled)"
mv guard events | grep sampled_access
[ "$(vm_field fr '["fusion"]["excluded"]')" = True ] || fail "fr not excluded from fusion"
[ "$(vm_field fr '["fusion"]["fused_pages"]')" -eq 0 ] || fail "fr still has fused pages"
sleep 1
s1=$(snap fr); sleep 4; s2=$(snap fr)
a=$(acc "$s1" "$s2")
log "Flush+Reload accuracy after detection: $a"
within_chance "$a" 32 || fail "Flush+Reload accuracy $a after detection is not chance"
mv vm verify victim >/dev/null || fail "verify victim"
mv vm verify fr >/dev/null || fail "verify fr"

log "policy: other responses reach the suspect"
mv guard policy set --action pause --wp-min-pages 8 >/dev/null
mv guard policy --json | jget "j['action']=='pause' and j['write_probe']['min_pages']==8" | grep -q True ||
  fail "policy not applied"
res=$(api POST /v1/guard/policy '{"action":"explode"}')
[ "${res%% *}" = 400 ] && [ "$(jget "j['error']['field']" <<<"${res#* }")" = action ] || fail "bad action: $res"
mv vm create att2 --memory 16M --workload writeprobe --seed 9 --wss 256K --fusion >/dev/null
paused() { [ "$(vm_field att2 '["state"]')" = paused ]; }
wait_for 30 paused || fail "the pause response did not pause att2: $(mv guard events)"
mv vm rm --force att2 >/dev/null

mv guard policy set --action throttle --throttle-pct 60 >/dev/null
mv vm create att3 --memory 16M --workload writeprobe --seed 9 --wss 256K --fusion >/dev/null
# The VMM reports its vCPU throttle in the VM's stats (refreshed every second).
throttled() { [ "$(vm_field att3 '["stats"]["throttle_pct"]')" = 60 ]; }
wait_for 30 throttled || fail "the throttle response did not throttle att3: $(mv guard events)"
[ "$(vm_field att3 '["state"]')" = running ] || fail "throttled att3 is not running"
mv vm rm --force att3 >/dev/null

mv guard policy set --action stop >/dev/null
mv vm create att4 --memory 16M --workload writeprobe --seed 9 --wss 256K --fusion >/dev/null
stopped() { [ "$(vm_field att4 '["state"]')" = stopped ]; }
wait_for 30 stopped || fail "the stop response did not stop att4: $(mv guard events)"
mv guard events --json | jget "any(e['suspect']=='att4' and e['action']=='stop' and e['outcome']=='ok' for e in j['events'])" |
  grep -q True || fail "no stop event with outcome ok: $(mv guard events)"
mv vm rm --force att4 >/dev/null

log "deny list: a known probe page (the victim's public page, by content hash)"
pid=$(vm_field victim '["pid"]')
hash=$(python3 - "$pid" <<'PY' | "$MV_BUILD/tests/integration/page_hash"
import sys
pid = sys.argv[1]
for line in open(f"/proc/{pid}/maps"):
    f = line.split()
    # Fused pages are VMAs of the pool: any VMA of the RAM memfd gives the base.
    if len(f) >= 6 and f[5].startswith("/memfd:mv-victim-ram"):
        base = int(f[0].split("-")[0], 16) - int(f[2], 16)
        with open(f"/proc/{pid}/mem", "rb") as m:
            m.seek(base + 0x1000)
            sys.stdout.buffer.write(m.read(4096))
        break
PY
)
[ ${#hash} -eq 16 ] || fail "no page hash: '$hash'"
mv guard policy set --action log --deny "public page=$hash" >/dev/null
mv guard policy | grep -q "$hash public page" || fail "deny entry not listed: $(mv guard policy)"
mv vm create fr2 --memory 16M --workload flushreload --seed 9 --wss 64K --fusion >/dev/null
deny_event() { mv guard events --json | jget "any(e['signal']=='deny_hash' and e['suspect']=='fr2' and e['rule']=='public page' for e in j['events'])" | grep -q True; }
wait_for 30 deny_event || fail "deny list not applied: $(mv guard events)"
mv guard events --json | jget "all(e['suspect']!='victim' for e in j['events'])" | grep -q True ||
  fail "the victim's own protected page made it a suspect"
mv vm rm --force fr2 >/dev/null
mv vm rm --force fr >/dev/null

log "policy move: the victim's sensitive ranges go to fresh frames"
out=$(mv vm sensitive add victim --gpa 4M --len 1M --json) || fail "sensitive add 1M"
[ "$(jget "j['resident_pages']" <<<"$out")" -eq 256 ] || fail "1M range not resident: $out"
frames() { protected_frames "$STATE/memvisor.db" "$(vm_field victim '["id"]')"; }
# The range's zero pages fuse after it is added, which frees their first
# frames for anyone, the move included: compare with the frames they have
# once that settles (two guard checks, a second apart, recording the same).
settled() {
  local a; a=$(frames)
  sleep 1.2
  [ "$(jget 'len(j)' <<<"$a")" -eq 259 ] && [ "$a" = "$(frames)" ]
}
wait_for 20 settled || fail "protected frames of the victim not recorded or not settling: $(frames | jget 'len(j)')"
before=$(frames)
mv guard policy set --action move >/dev/null
mv guard policy --json | jget "j['action']" | grep -qx move || fail "policy action move not applied"
mv vm create att5 --memory 16M --workload writeprobe --seed 9 --wss 256K --fusion >/dev/null
mv_event() { mv guard events --json | jget "any(e['suspect']=='att5' and e['action']=='move' and e['outcome'].startswith('ok') for e in j['events'])" | grep -q True; }
wait_for 30 mv_event || fail "no move event with outcome ok: $(mv guard events)"
e=$(mv guard events --json | jget "__import__('json').dumps([e for e in j['events'] if e['suspect']=='att5'][0])")
log "event: $e"
[ "$(jget "j['victim']" <<<"$e")" = victim ] || fail "move event without the victim: $e"
log "move time: $(jget "j['outcome']" <<<"$e")"
grep "guard: range .* of vm victim moved" "$T/daemon.log" || fail "no move log line"
after=$(frames)
python3 - "$before" "$after" <<'PY' || fail "the victim's frames did not all change"
import json, sys
b, a = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert b.keys() == a.keys(), (len(b), len(a))
same = [g for g in b if b[g] == a[g]]
assert not same, f"{len(same)} pages kept their frame: {same[:4]}"
print(f"{len(a)} protected pages, every frame changed")
PY
mv vm verify victim >/dev/null || fail "verify victim after the move"
for vm in victim att5; do
  [ "$(vm_field $vm '["state"]')" = running ] || fail "$vm not running after the move"
done
ops=$(vm_field victim '["stats"]["ops_done"]')
moving() { [ "$(vm_field victim '["stats"]["ops_done"]')" -gt "$ops" ]; }
wait_for 10 moving || fail "the victim makes no progress after the move"
mv vm verify victim >/dev/null || fail "verify victim later"
mv vm rm --force att5 >/dev/null
log "ok"
