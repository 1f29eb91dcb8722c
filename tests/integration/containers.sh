#!/usr/bin/env bash
# Containers end to end against a real registry (scripts/test-registry, the
# image from scripts/make-test-image): memvisord pulls (twice: the second
# fetches only the manifest), runs commands with crun over the lazy FUSE
# root through memvisor-ctr shims, and the CLI streams their output and
# exit codes. Checks: files of every layer with overlay semantics (whiteout,
# opaque dir), copy-up writes private to their container, chunks fetched by
# one container reused by the next, a kill -9 of the daemon while a
# container loops reading files (still running afterwards, never a failed
# read), a shim killed while the daemon was down (marked exited), the shared
# cache (a second daemon's container reads only cache hits, 0 registry
# bytes), and 4xx JSON errors naming the field for every new route.
. "$(dirname "$0")/lib.sh"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
for b in /usr/bin/docker-registry /usr/bin/skopeo /bin/busybox /usr/bin/fusermount3 /usr/bin/crun; do
  [ -x "$b" ] || { echo "SKIP: $b missing (scripts/bootstrap installs it)"; exit 77; }
done
[ -c /dev/fuse ] || { echo "SKIP: no /dev/fuse"; exit 77; }

STATE_A=$STATE
# Shims outlive daemons by design: stop them (and their crun containers)
# ourselves, then the registry.
stop_shims() {
  local d
  for d in "$T"/state*/containers/*; do
    [ -f "$d/shim.pid" ] || continue
    kill -TERM "$(cat "$d/shim.pid")" 2>/dev/null || continue
  done
  for d in "$T"/state*/containers/*; do
    [ -f "$d/shim.pid" ] || continue
    for _ in $(seq 150); do kill -0 "$(cat "$d/shim.pid")" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$(cat "$d/shim.pid")" 2>/dev/null
    crun kill "mv-$(basename "$d")" KILL 2>/dev/null; crun delete -f "mv-$(basename "$d")" 2>/dev/null
    mountpoint -q "$d/rootfs" 2>/dev/null && fusermount3 -u -z "$d/rootfs"
  done
  "$SRC/scripts/test-registry" stop "$T/reg"
}
EXTRA_CLEANUP='stop_shims'
is_state() { [ "$(mv container show "$1" --json | jget 'j["state"]')" = "$2" ]; }

port=$("$SRC/scripts/test-registry" start "$T/reg")
"$SRC/scripts/make-test-image" "$T/img" "$port" test/lazy:v1 >/dev/null
REF=127.0.0.1:$port/test/lazy:v1
start_daemon --image-cache "$T/cache"

# ---- pull, twice ----
mv image pull "$REF" --json >"$T/pull1.json"
[ "$(jget 'j["state"]' <"$T/pull1.json")" = ready ] || fail "pull: $(cat "$T/pull1.json")"
b1=$(jget 'j["registry_bytes"]' <"$T/pull1.json")
mv image pull "$REF" --json >"$T/pull2.json"
b2=$(jget 'j["registry_bytes"]' <"$T/pull2.json")
[ "$(jget 'j["manifest"]' <"$T/pull1.json")" = "$(jget 'j["manifest"]' <"$T/pull2.json")" ] ||
  fail "second pull changed the manifest"
# The second pull reads the manifest again (a tag may move) and nothing else.
[ "$b2" -le 65536 ] && [ "$b2" -lt "$b1" ] || fail "second pull fetched $b2 bytes (first $b1)"
mv image ls | grep -q "test/lazy:v1 *ready" || fail "image ls"
log "pull: $b1 bytes, again: $b2 bytes"

# ---- run: exact output and exit code ----
set +e
out=$(mv container run --name c1 "$REF" sh -c 'echo hello; cat /etc/motd; echo to-stderr >&2; exit 7')
rc=$?
set -e
[ $rc -eq 7 ] || fail "container run exited $rc, not 7"
[ "$out" = "$(printf 'hello\nlayer two\nto-stderr')" ] || fail "container output: '$out'"
[ "$(mv container show c1 --json | jget 'j["exit"]["code"]')" = 7 ] || fail "exit code in show"

# ---- every layer, overlay semantics ----
out=$(mv container run --rm "$REF" sh -c '
  cat /etc/hostname; cat /etc/motd; wc -c </data/layer2-2m; cat /data/text-1
  test -e /data/gone.txt && echo whiteout-ignored || echo whiteout-applied
  ls /opq; cat /opq/new')
want=$(printf 'memvisor-test\nlayer two\n2097152\noverwritten by layer 3\nwhiteout-applied\nnew\nfrom layer 2')
[ "$out" = "$want" ] || fail "overlay view: got '$out'"

# ---- copy-up writes stay in their container ----
out=$(mv container run --name w1 "$REF" sh -c 'echo written >/etc/motd; echo x >/newfile; cat /etc/motd /newfile')
[ "$out" = "$(printf 'written\nx')" ] || fail "writes in w1: '$out'"
[ "$(mv container show w1 --json | jget 'j["fs"]["copy_ups"] >= 1')" = True ] || fail "no copy-up counted"
out=$(mv container run --name w2 "$REF" sh -c 'cat /etc/motd; test -e /newfile && echo leaked || echo private')
[ "$out" = "$(printf 'layer two\nprivate')" ] || fail "w2 saw w1's writes: '$out'"

# ---- chunks fetched by one container serve the next ----
want=$(python3 - "$T/img/oci" <<'PY'
import hashlib, json, os, sys, tarfile
oci = sys.argv[1]; b = os.path.join(oci, "blobs", "sha256")
man = json.load(open(os.path.join(b, json.load(open(os.path.join(oci, "index.json")))["manifests"][0]["digest"][7:])))
with tarfile.open(os.path.join(b, man["layers"][0]["digest"][7:])) as tf:
    print(hashlib.sha256(tf.extractfile("data/random-3m").read()).hexdigest())
PY
)
s1=$(mv container run --name f1 "$REF" busybox sha256sum /data/random-3m | cut -d' ' -f1)
s2=$(mv container run --name f2 "$REF" busybox sha256sum /data/random-3m | cut -d' ' -f1)
[ "$s1" = "$want" ] && [ "$s2" = "$want" ] || fail "random-3m content: $s1 / $s2 / $want"
f1=$(mv container show f1 --json | jget 'j["fs"]["registry_bytes"]')
f2=$(mv container show f2 --json | jget 'j["fs"]["registry_bytes"]')
[ "$f1" -gt 0 ] && [ "$f2" -eq 0 ] || fail "first reader fetched $f1, second $f2 (want >0, 0)"
log "3 MiB file: first container fetched $f1 bytes, the second 0"

# ---- kill -9 the daemon under a container that keeps reading ----
id=$(mv container run -d --name loop "$REF" sh -c \
  'while :; do cat /data/text-4096 /etc/motd /bin/busybox >/dev/null || echo BAD; sleep 0.05; done')
wait_for 30 is_state loop running || fail "loop container not running"
pid_before=$(mv container show loop --json | jget 'j["pid"]')
victim=$(mv container run -d --name victim "$REF" sh -c 'while :; do sleep 1; done')
wait_for 30 test -s "$STATE/containers/$victim/pid" || fail "victim did not start"
kill9_daemon
kill -0 "$(cat "$STATE/containers/$id/shim.pid")" || fail "shim died with the daemon"
mountpoint -q "$STATE/containers/$id/rootfs" || fail "root unmounted with the daemon"
kill -9 "$(cat "$STATE/containers/$victim/shim.pid")"   # dies while nobody watches
sleep 1
start_daemon --image-cache "$T/cache"
[ "$(mv container show loop --json | jget 'j["state"]')" = running ] || fail "loop not running after restart"
[ "$(mv container show loop --json | jget 'j["pid"]')" = "$pid_before" ] || fail "loop's pid changed"
wait_for 10 is_state victim exited || fail "victim (shim killed) not marked exited"
mv container show victim --json | jget 'j["exit"]["reason"]' | grep -q "died without" ||
  fail "victim's exit reason"
# The daemon ends what the dead shim left: its crun container and mount.
crun state "mv-$victim" >/dev/null 2>&1 && fail "victim's crun container left running"
mountpoint -q "$STATE/containers/$victim/rootfs" && fail "victim's dead FUSE root left mounted"
sleep 1   # reads across the restart, then more after it
mv container stop loop >/dev/null
mv container logs loop >"$T/loop.log"
! grep -q BAD "$T/loop.log" || fail "reads failed across the restart: $(head -3 "$T/loop.log")"
[ "$(mv container show loop --json | jget 'j["state"]')" = exited ] || fail "loop not stopped"
mv container rm loop >/dev/null
mv container rm victim >/dev/null
[ ! -e "$STATE/containers/$id" ] || fail "rm left $STATE/containers/$id"
log "daemon kill -9 + restart: container kept running, no failed read"

# ---- bad input: 4xx with a JSON error naming the field ----
expect_err() { # STATUS FIELD METHOD PATH [BODY]
  local want=$1 field=$2; shift 2
  local got; got=$(api "$@")
  [ "${got%% *}" = "$want" ] || fail "$* -> ${got%% *}, want $want: ${got#* }"
  [ "$(jget 'j["error"]["field"]' <<<"${got#* }")" = "$field" ] || fail "$* names field ${got#* }, want $field"
}
expect_err 400 ref POST /v1/images '{}'
expect_err 400 ref POST /v1/images '{"ref":"no-registry"}'
expect_err 400 ref POST /v1/images '{"ref":7}'
expect_err 400 extra POST /v1/images "{\"ref\":\"$REF\",\"extra\":1}"
expect_err 400 body POST /v1/images '{"ref":'
expect_err 404 name GET /v1/images/127.0.0.1:1%2Fnone%2Fhere:v1
expect_err 400 name GET "/v1/images/..%2Fetc"
mv container run -d --name busy "$REF" sh -c 'while :; do sleep 1; done' >/dev/null
expect_err 409 name DELETE "/v1/images/$REF"
expect_err 400 image POST /v1/containers '{"image":1}'
expect_err 400 image POST /v1/containers '{"cmd":["true"]}'
expect_err 400 cmd POST /v1/containers "{\"image\":\"$REF\",\"cmd\":\"ls\"}"
expect_err 400 'cmd[1]' POST /v1/containers "{\"image\":\"$REF\",\"cmd\":[\"ls\",2]}"
expect_err 400 'env[0]' POST /v1/containers "{\"image\":\"$REF\",\"env\":[\"NOEQUALS\"]}"
expect_err 400 name POST /v1/containers "{\"image\":\"$REF\",\"name\":\"Bad Name\"}"
expect_err 409 name POST /v1/containers "{\"image\":\"$REF\",\"name\":\"busy\"}"
expect_err 404 image POST /v1/containers "{\"image\":\"127.0.0.1:$port/test/absent:v1\"}"
expect_err 400 ctr GET '/v1/containers/Bad!'
expect_err 404 ctr GET /v1/containers/nope
expect_err 404 ctr POST /v1/containers/nope/stop
expect_err 409 ctr DELETE /v1/containers/busy
expect_err 400 force DELETE '/v1/containers/busy?force=maybe'
expect_err 400 offset GET '/v1/containers/busy/logs?offset=-1'
expect_err 400 wait_ms GET '/v1/containers/busy/logs?wait_ms=9999999'
expect_err 400 images POST /v1/cache/prepopulate '{"images":[]}'
expect_err 400 'images[0]' POST /v1/cache/prepopulate '{"images":["no-registry"]}'
expect_err 400 images POST /v1/cache/prepopulate '{"images":"x"}'
got=$(api DELETE '/v1/containers/busy?force=1'); [ "${got%% *}" = 204 ] || fail "forced rm: $got"
log "bad input: every route answers 4xx naming the field"

# ---- the shared cache: prepopulate, then a fresh daemon reads only hits ----
mv cache prepopulate "$REF" >"$T/prepop.out" 2>&1 || { cat "$T/prepop.out" >&2; fail "cache prepopulate"; }
cat "$T/prepop.out" >&2
[ "$(mv cache status --json | jget 'j["prepopulate"]["state"]')" = done ] || fail "cache status"
# The text form exits 0 too (it used to exit 1 after printing).
mv cache status | grep -Eq '^last fill: +done$' || fail "cache status (text)"
term_daemon
STATE=$T/state-b
start_daemon --image-cache "$T/cache"
mv image pull "$REF" >/dev/null
reg_before=$(mv metrics | awk '$1 == "memvisor_image_registry_bytes_total" {print $2}')
out=$(mv container run --name hit "$REF" sh -c 'cat /etc/motd; busybox sha256sum /data/random-3m | cut -d" " -f1')
[ "$out" = "$(printf 'layer two\n%s' "$want")" ] || fail "cached read: '$out'"
mv metrics >"$T/metrics"
hits=$(awk '$1 == "memvisor_image_cache_hits_total" {print $2}' "$T/metrics")
reg_after=$(awk '$1 == "memvisor_image_registry_bytes_total" {print $2}' "$T/metrics")
[ "$hits" -ge 2 ] || fail "cache hits $hits after reading 2 files"
[ "$reg_after" = "$reg_before" ] || fail "registry bytes grew $reg_before -> $reg_after with a full cache"
[ "$(mv container show hit --json | jget 'j["fs"]["registry_bytes"]')" = 0 ] || fail "container fetched"
log "shared cache: $hits hits, 0 registry bytes for a container of a fresh daemon"
mv container rm hit >/dev/null
STATE=$STATE_A
# Shims of the containers still listed (under ASan: their reports land in ctr.log).
for f in "$STATE_A"/containers/*/ctr.log; do
  ! grep -q "Sanitizer" "$f" || fail "sanitizer report in $f: $(grep -m3 Sanitizer "$f")"
done
[ -z "$DAEMON_PID" ] || term_daemon
log "ok"
