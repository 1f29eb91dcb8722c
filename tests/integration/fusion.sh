#!/bin/bash
# fusion.sh: page fusion across VMs. Two pairs of VMs hold identical content
# on purpose (memtouch, same seed, same layout, sequential pages: a page's
# bytes depend on (seed, gpa, version, op), so after one pass both VMs hold
# the same pages); a third VM with the same content did not opt in. Checks:
# the pairs' pages fuse and their memfds really shrink (st_blocks), the
# opted-out VM is untouched, every workload verifies with pages fused, after
# copy-on-write churn (8 vCPUs writing fused pages at once), across a
# hand-over (which copies fused pages back first) and a daemon restart
# (re-adoption copies them back too), and the stats show in /metrics and
# `memvisor fusion status`.
. "$(dirname "$0")/lib.sh"

start_daemon --fusion-rate 200000
PAGES=4096   # 16M of wss
# 4K pages explicitly: "auto" takes hugetlb when the host has free huge pages
# (another tenant of the machine may reserve some), and fusion skips hugetlb.
common="--memory 64M --workload memtouch --seed 7 --wss 16M --pattern seq --backing 4k"
mv vm create f1 $common --vcpus 2 --rate 4000 --fusion >/dev/null
mv vm create f2 $common --vcpus 2 --rate 4000 --fusion >/dev/null
mv vm create plain $common --vcpus 2 --rate 4000 >/dev/null
# The stress pair: 8 vCPUs each, fused then written all at once.
mv vm create s1 $common --vcpus 8 --rate 1000 --fusion >/dev/null
mv vm create s2 $common --vcpus 8 --rate 1000 --fusion >/dev/null

ops() { vm_field "$1" '["stats"]["ops_done"]'; }
fstat() { mv fusion status --json | jget "j['$1']"; }
resident() { vm_field "$1" '["stats"]["resident_bytes"]'; }
one_pass() { [ "$(ops "$1")" -ge $PAGES ]; }

log "first pass over the working set, then pause (content stays put)"
for vm in f1 f2 plain s1 s2; do
  wait_for 30 one_pass $vm || fail "$vm did not write its working set"
  mv vm pause $vm >/dev/null
done
# Pages both VMs of a pair wrote in the same pass are identical.
sharing_at_least() { [ "$(fstat sharing)" -ge "$1" ]; }
t0=$(date +%s.%N)
wait_for 30 sharing_at_least $((PAGES * 3)) || fail "only $(fstat sharing) pages fused: $(mv fusion status --json)"
t1=$(date +%s.%N)
log "fused: $(mv fusion status --json) in $(python3 -c "print(round($t1-$t0,2))") s"
sleep 1.5   # the watcher refreshes resident bytes every second
r1=$(resident f1); rp=$(resident plain)
log "resident: f1 $r1, plain $rp (bytes)"
[ "$r1" -lt $((rp / 2)) ] || fail "f1's memfd did not shrink: $r1 vs plain $rp"
[ "$(vm_field plain '["fusion"]["fused_pages"]')" -eq 0 ] || fail "plain VM was fused"
for vm in f1 f2 plain s1 s2; do
  mv vm verify $vm >/dev/null || fail "verify $vm with fused pages"
done
mv metrics | grep -q 'memvisor_fusion_pages{kind="sharing"} [1-9]' || fail "no fusion metrics"
mv fusion status | grep -q "saved" || fail "fusion status text"

log "stress: 16 vCPUs write fused pages at once (copy-on-write)"
mv vm resume s1 >/dev/null; mv vm resume s2 >/dev/null
breaks() { [ "$(fstat cow_breaks)" -ge "$1" ]; }
wait_for 30 breaks 1000 || fail "no copy-on-write breaks: $(mv fusion status --json)"
sleep 2
mv vm verify s1 >/dev/null || fail "verify s1 after copy-on-write storm"
mv vm verify s2 >/dev/null || fail "verify s2 after copy-on-write storm"

log "churn: f1/f2 rewrite their pages while the scanner fuses them again"
mv vm resume f1 >/dev/null; mv vm resume f2 >/dev/null
m0=$(fstat merges)
sleep 6
[ "$(fstat merges)" -gt "$m0" ] || fail "no merges during churn"
for vm in f1 f2 s1 s2; do
  mv vm verify $vm >/dev/null || fail "verify $vm after churn"
done

log "hand-over of a VM with fused pages (copied back first)"
mv vm pause f1 >/dev/null; mv vm pause f2 >/dev/null
f1_fused() { [ "$(vm_field f1 '["fusion"]["fused_pages"]')" -gt 100 ]; }
wait_for 20 f1_fused || fail "f1 not fused again before the hand-over"
mv vm migrate f1 --local >/dev/null || fail "hand-over of f1"
mv vm verify f1 >/dev/null || fail "verify f1 after hand-over"
mv vm resume f1 >/dev/null
wait_for 20 f1_fused || fail "f1 not fused again after the hand-over"
mv vm verify f1 >/dev/null || fail "verify f1 fused again after the hand-over"

log "daemon restart: re-adoption copies fused pages back"
kill9_daemon
start_daemon --fusion-rate 200000
for vm in f1 f2 s1 s2 plain; do
  [ "$(vm_field $vm '["state"]')" != crashed ] || fail "$vm crashed across the restart"
  mv vm verify $vm >/dev/null || fail "verify $vm after the daemon restart"
done
log "final: $(mv fusion status --json)"
for vm in f1 f2 s1 s2 plain; do mv vm stop $vm >/dev/null; done
term_daemon
log "ok"
