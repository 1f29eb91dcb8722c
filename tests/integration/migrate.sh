#!/usr/bin/env bash
# Live migration between two daemons on one machine (two "hosts" on
# loopback): every workload under load arrives and verifies, with zstd and
# post-copy too; faults before the switch-over (destination refuses or dies,
# connection cut, frame corrupted) leave the VM running on the source with its
# memory intact and an error that says what happened; killing the source
# after the switch-over does not touch the destination.
. "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)

PORT=$(free_port)
start_daemon_b "$PORT" --mem-capacity 4G
PORT_A=$(free_port)
start_daemon --mem-capacity 8G --migrate-listen "127.0.0.1:$PORT_A"
state_a() { mv vm show "$1" --json | jget 'j["state"]'; }

migrate_ok() { # name, extra migrate flags...
  local vm=$1; shift
  mv vm migrate "$vm" --to "127.0.0.1:$PORT" "$@" >"$T/mig.out" 2>&1 || fail "migrate $vm $*: $(cat "$T/mig.out")"
  [ "$(state_a "$vm")" = migrated ] || fail "$vm not marked migrated on the source"
  [ "$(mvb vm show "$vm" --json | jget 'j["state"]')" = running ] || fail "$vm not running on the destination"
  sleep 0.3
  mvb vm verify "$vm" >/dev/null || fail "verify $vm on the destination"
  log "$vm: $(cat "$T/mig.out")"
}

log "each workload under load, pre-copy"
mv vm create idle1 --memory 256M --workload idle >/dev/null
mv vm create touch1 --memory 1G --vcpus 2 --workload memtouch --wss 128M --rate 20000 >/dev/null
mv vm create kv1 --memory 512M --workload kvstore --wss 32M --rate 50000 >/dev/null
sleep 1
for vm in idle1 touch1 kv1; do migrate_ok $vm; done
ops1=$(mvb vm verify kv1 --json | jget 'j["ops_done"]'); sleep 0.5
ops2=$(mvb vm verify kv1 --json | jget 'j["ops_done"]')
[ "$ops2" -gt "$ops1" ] || fail "kv1 does not run at the destination"
for vm in idle1 touch1 kv1; do mv vm rm $vm; mvb vm rm --force $vm; done

log "zstd compression and post-copy"
mv vm create z1 --memory 512M --workload memtouch --wss 64M --rate 10000 --pattern hotcold >/dev/null
mv vm create p1 --memory 512M --vcpus 2 --workload kvstore --wss 32M --rate 20000 >/dev/null
sleep 1
migrate_ok z1 --compress
migrate_ok p1 --postcopy
for vm in z1 p1; do mv vm rm $vm; mvb vm rm --force $vm; done

log "a paused guest: pages go straight from guest RAM to the socket"
mv vm create s1 --memory 512M --workload memtouch --wss 96M --pattern seq --rate 100000 >/dev/null
mv vm create s2 --memory 256M --workload memtouch --wss 32M --pattern hotcold --rate 20000 >/dev/null
sleep 1.5
mv vm pause s1 >/dev/null
mv vm pause s2 >/dev/null
migrate_ok s1
migrate_ok s2 --compress
for vm in s1 s2; do mv vm rm $vm; mvb vm rm --force $vm; done

# hugetlbfs has no SEEK_DATA: the source must find its pages another way, or
# reading the holes would allocate (and zero) a 2 MiB page for each. After a
# hand-over the new VMM has mapped none of them; they must still be found.
log "huge-page guest RAM: only resident pages travel, after a hand-over too"
pool0=$(cat /proc/sys/vm/nr_hugepages)
if hugetlb_pool $((pool0 + 72)) 2>/dev/null && [ "$(cat /proc/sys/vm/nr_hugepages)" -ge $((pool0 + 72)) ]; then
  LATE_CLEANUP="hugetlb_pool $pool0"
  resident() { "$@" --json | jget 'j["stats"]["resident_bytes"]'; }
  # VM stats refresh every second: poll until they show what is expected.
  resident_is() { [ "$(resident "${@:2}")" = "$1" ]; }
  mv vm create h1 --memory 64M --backing hugetlb --workload memtouch --wss 24M --pattern seq \
    --rate 100000 >/dev/null
  wait_for 20 bash -c "[ \$($MVCLI vm show h1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"stats\"][\"resident_bytes\"])') -ge $((24 << 20)) ]" ||
    fail "h1 never became resident"
  mv vm pause h1 >/dev/null
  sleep 1.2   # one stats refresh after the last write
  want=$(resident mv vm show h1)
  [ "$want" -lt $((64 << 20)) ] || fail "h1 resident $want: the whole guest, nothing to test"
  migrate_ok h1
  wait_for 5 resident_is "$want" mvb vm show h1 ||
    fail "h1 resident on arrival $(resident mvb vm show h1) bytes, $want on the source"
  mv vm rm h1 >/dev/null   # its "migrated" record
  mvb vm pause h1 >/dev/null
  mvb vm migrate h1 --local >/dev/null || fail "hand-over of h1"
  mvb vm migrate h1 --to "127.0.0.1:$PORT_A" >"$T/mig.out" 2>&1 || fail "migrate h1 back: $(cat "$T/mig.out")"
  [ "$(state_a h1)" = running ] || fail "h1 not running back on the source"
  sleep 0.3
  mv vm verify h1 >/dev/null || fail "verify h1 after the round trip"
  wait_for 5 resident_is "$want" mv vm show h1 ||
    fail "h1 resident after the round trip $(resident mv vm show h1) bytes, want $want"
  got=$want
  log "h1: $(cat "$T/mig.out") (resident $got bytes of 64 MiB both ways)"
  mv vm rm --force h1 >/dev/null
  mvb vm rm h1 >/dev/null
  # Post-copy on hugetlb: stale huge pages are dropped whole at the
  # destination and placed whole (UFFDIO_COPY of 2 MiB) as they arrive.
  mv vm create hp1 --memory 64M --backing hugetlb --vcpus 2 --workload kvstore --wss 16M \
    --rate 50000 >/dev/null
  sleep 1
  migrate_ok hp1 --postcopy --json
  python3 - "$T/mig.out" <<'PY' || fail "hp1: $(cat "$T/mig.out")"
import json, sys
m = json.load(open(sys.argv[1]))["migration"]
assert m["phase"] == "done" and m["pages_sent"] > 0, m
print("hp1: post-copy on hugetlb, %d pages sent, %d huge pages asked for" %
      (m["pages_sent"], m["pages_requested"]))
PY
  mv vm rm hp1 >/dev/null
  mvb vm rm --force hp1 >/dev/null
  # The unit tests' hugetlb cases skip without a pool; run them with this one.
  MV_TEST_FILTER='*hugetlb*' "$MV_BUILD/tests/unit/migrate/test_migrate" >"$T/ut.out" 2>&1 ||
    fail "hugetlb unit cases: $(cat "$T/ut.out")"
  ! grep -q SKIPPED "$T/ut.out" || fail "hugetlb unit cases skipped with a pool: $(cat "$T/ut.out")"
  log "$(grep -c '^\[       OK \]' "$T/ut.out") hugetlb unit cases passed"
  hugetlb_pool "$pool0"
  LATE_CLEANUP=
else
  log "skipped: no $((72 * 2)) MiB hugetlb pool could be reserved here"
fi

# A VM that takes a while to send: 384 MiB of data capped at 64 MiB/s.
mv vm create big --memory 1G --workload memtouch --wss 384M --pattern seq --rate 50000 >/dev/null
wait_for 30 bash -c "[ \$($MVCLI vm show big --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"stats\"][\"resident_bytes\"])') -ge $((384 << 20)) ]" ||
  fail "big never became resident"
expect_failed_migration() { # what, grep pattern for the error, migrate args...
  local what=$1 pat=$2; shift 2
  mv vm migrate big "$@" >"$T/mig.out" 2>&1 && fail "$what: migration succeeded"
  grep -qiE "$pat" "$T/mig.out" || fail "$what: error does not say what happened: $(cat "$T/mig.out")"
  [ "$(state_a big)" = running ] || fail "$what: VM is $(state_a big) on the source"
  mv vm verify big >/dev/null || fail "$what: source memory damaged"
  [ "$(mvb vm ls --json | jget 'len(j["vms"])')" = "${DEST_VMS:-0}" ] || fail "$what: a VM was left on the destination"
  log "$what: $(tail -1 "$T/mig.out")"
}

# The daemons' own record of a VM travels too (CONFIG's tenant block): its
# fusion opt-in and the guard's sensitive ranges, registered (locked, frames
# read) again at the destination.
log "tenant settings: fusion opt-in and sensitive ranges follow the VM"
mv vm create t1 --memory 64M --workload memtouch --wss 16M --rate 20000 --fusion >/dev/null
mv vm sensitive add t1 --gpa 1M --len 256K >/dev/null
mv vm sensitive add t1 --gpa 8M --len 64K >/dev/null
migrate_ok t1
[ "$(mvb vm show t1 --json | jget 'j["fusion"]["enabled"]')" = True ] || fail "t1 lost its fusion opt-in"
ranges() { "$@" vm sensitive ls t1 --json | jget "sorted((r['gpa'], r['len'], r['locked'], r['resident_pages']) for r in j['ranges'])"; }
got=$(ranges mvb)
[ "$got" = "[(1048576, 262144, True, 64), (8388608, 65536, True, 16)]" ] ||
  fail "t1's sensitive ranges at the destination: $got"
log "t1 at the destination: sensitive ranges $got"
mv vm rm t1 >/dev/null
mvb vm rm --force t1 >/dev/null

log "faults before the switch-over"
expect_failed_migration "nobody listening" "reach|refused" --to "127.0.0.1:$(free_port)"
P2=$(free_port)
python3 "$here/faultproxy.py" "$P2" "$PORT" cut $((64 << 20)) >"$T/proxy.out" 2>&1 &
wait_for 5 grep -q ready "$T/proxy.out" || fail "proxy"
expect_failed_migration "connection cut" "closed|reset|short|pipe|EOF|connection" --to "127.0.0.1:$P2" --max-bandwidth 64M
P3=$(free_port)
python3 "$here/faultproxy.py" "$P3" "$PORT" corrupt $((8 << 20)) >"$T/proxy.out" 2>&1 &
wait_for 5 grep -q ready "$T/proxy.out" || fail "proxy"
expect_failed_migration "corrupted frame" "checksum|corrupt|crc|refused|NACK|closed" --to "127.0.0.1:$P3"
mv vm pause big >/dev/null
P4=$(free_port)
python3 "$here/faultproxy.py" "$P4" "$PORT" corrupt $((8 << 20)) >"$T/proxy.out" 2>&1 &
wait_for 5 grep -q ready "$T/proxy.out" || fail "proxy"
mv vm migrate big --to "127.0.0.1:$P4" >"$T/mig.out" 2>&1 && fail "paused, corrupted frame: migration succeeded"
grep -qiE "checksum|corrupt|crc|refused|NACK|closed" "$T/mig.out" || fail "paused, corrupted frame: $(cat "$T/mig.out")"
[ "$(state_a big)" = paused ] || fail "paused, corrupted frame: VM is $(state_a big) on the source"
mv vm verify big >/dev/null || fail "paused, corrupted frame: source memory damaged"
[ "$(mvb vm ls --json | jget 'len(j["vms"])')" = 0 ] || fail "paused, corrupted frame: a VM was left on the destination"
log "paused, corrupted frame: $(tail -1 "$T/mig.out")"
mv vm resume big >/dev/null
( sleep 1.5; pkill -9 -f -- "--ctl $B_STATE/" ) &
KILLER=$!
expect_failed_migration "destination VMM killed" "closed|reset|pipe|EOF|connection|died|NACK" --to "127.0.0.1:$PORT" --max-bandwidth 64M
wait $KILLER || true
mvb vm create big --memory 64M --workload idle >/dev/null
DEST_VMS=1 expect_failed_migration "name taken at the destination" "exists" --to "127.0.0.1:$PORT"
mvb vm rm --force big

log "kill the source after the switch-over: the destination runs on"
migrate_ok big
kill9_daemon
pkill -9 -f -- "--ctl $STATE/" || true
sleep 0.5
mvb vm verify big >/dev/null || fail "destination VM after the source died"
mvb vm rm --force big
log "ok"
