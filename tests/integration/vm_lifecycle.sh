#!/usr/bin/env bash
# Three VMs with different workloads; verify; kill -9 the daemon and restart
# it: every VM is re-adopted and kept running; verify again; kill -9 a VMM:
# reported crashed with its exit status; stop and remove the rest.
. "$(dirname "$0")/lib.sh"

start_daemon --mem-capacity 8G
log "creating three VMs"
mv vm create idle1 --memory 256M --workload idle >/dev/null
mv vm create touch1 --memory 1G --vcpus 2 --workload memtouch --wss 64M --rate 5000 --pattern hotcold --seed 3 >/dev/null
mv vm create kv1 --memory 512M --workload kvstore --wss 16M --rate 20000 --seed 9 >/dev/null
[ "$(mv vm ls --json | jget 'len(j["vms"])')" = 3 ] || fail "expected 3 VMs"
mv vm ls
for vm in idle1 touch1 kv1; do
  [ "$(vm_field $vm '["state"]')" = running ] || fail "$vm not running"
done
sleep 1.5
for vm in idle1 touch1 kv1; do mv vm verify $vm >/dev/null || fail "verify $vm"; done

log "pause/resume holds the workload at a consistent point"
mv vm pause kv1 >/dev/null
a=$(mv vm verify kv1 --json | jget 'j["ops_done"]'); sleep 0.5
b=$(mv vm verify kv1 --json | jget 'j["ops_done"]')
[ "$a" = "$b" ] || fail "paused VM advanced: $a -> $b"
mv vm resume kv1 >/dev/null

log "kill -9 the daemon; VMMs keep running"
pids_before=$(mv vm ls --json | jget '" ".join(str(v["pid"]) for v in j["vms"])')
ops_before=$(mv vm verify touch1 --json | jget 'j["ops_done"]')
kill9_daemon
sleep 1
for p in $pids_before; do kill -0 "$p" || fail "VMM $p died with the daemon"; done
start_daemon --mem-capacity 8G
pids_after=$(mv vm ls --json | jget '" ".join(str(v["pid"]) for v in j["vms"])')
[ "$pids_before" = "$pids_after" ] || fail "pids changed: $pids_before / $pids_after"
for vm in idle1 touch1 kv1; do
  [ "$(vm_field $vm '["state"]')" = running ] || fail "$vm not re-adopted as running"
  mv vm verify $vm >/dev/null || fail "verify $vm after restart"
done
ops_after=$(mv vm verify touch1 --json | jget 'j["ops_done"]')
[ "$ops_after" -gt "$ops_before" ] || fail "workload did not keep running ($ops_before -> $ops_after)"

log "kill -9 a VMM: reported crashed with its exit status"
kill -9 "$(vm_field kv1 '["pid"]')"
wait_for 10 bash -c "[ \"\$($MVCLI vm show kv1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"state\"])')\" = crashed ]" ||
  fail "kv1 not reported crashed"
[ "$(vm_field kv1 '["exit"]["signal"]')" = 9 ] || fail "exit signal not recorded"
mv vm show kv1 | grep -q "signal 9" || fail "show does not say how it died"
mv vm verify kv1 2>/dev/null && fail "verify of a crashed VM must fail"

log "a crash is also remembered across a daemon restart"
kill9_daemon; start_daemon --mem-capacity 8G
[ "$(vm_field kv1 '["state"]')" = crashed ] || fail "crash forgotten after restart"

log "metrics"
m=$(mv metrics)
grep -q 'memvisor_vms{state="running"} 2' <<<"$m" || fail "metrics: running count"
grep -q 'memvisor_vms{state="crashed"} 1' <<<"$m" || fail "metrics: crashed count"
grep -q 'memvisor_vm_dirty_pages_per_second{vm="touch1"}' <<<"$m" || fail "metrics: dirty rate"
sleep 2
rate=$(mv vm show touch1 --json | jget 'j["stats"]["dirty_rate"]')
python3 -c "import sys; sys.exit(0 if $rate > 1000 else 1)" || fail "dirty rate $rate too low for 5000 pages/s"

log "stop and remove"
mv vm stop touch1 >/dev/null
[ "$(vm_field touch1 '["state"]')" = stopped ] || fail "touch1 not stopped"
# A clean exit (under ASan this also means: no leaks in the VMM).
[ "$(vm_field touch1 '["exit"]["code"]')" = 0 ] || fail "VMM exit: $(vm_field touch1 '["exit"]')"
mv vm rm idle1 2>/dev/null && fail "rm of a running VM needs --force"
mv vm rm idle1 --force
mv vm rm touch1
mv vm rm kv1
[ "$(mv vm ls --json | jget 'len(j["vms"])')" = 0 ] || fail "VMs left over"
pgrep -f -- "--ctl $STATE/" && fail "VMM processes left over"

log "a VM survives a clean daemon shutdown too"
mv vm create last --memory 64M --workload memtouch --wss 1M >/dev/null
term_daemon
start_daemon --mem-capacity 8G
mv vm verify last >/dev/null || fail "verify after SIGTERM restart"
mv vm rm --force last
term_daemon
log "ok"
