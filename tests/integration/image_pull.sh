#!/usr/bin/env bash
# mv_image_pull, published layer indexes, the shared cache and chunk-by-chunk
# fetches against a real registry (scripts/test-registry, the image of
# scripts/make-test-image), driven through image_probe's subcommands:
# - bad references are refused with the field named;
# - a pull builds the indexes (streams each layer once) and publishes them as
#   the artifact tagged sha256-<manifest hex>.mvidx; a second pull into the
#   same store streams 0 layer bytes; a fresh store ("another host") takes
#   the published indexes and streams 0 layer bytes; pull by digest works;
# - the image's config is kept in the store (mv_image_config);
# - cache prepopulate fills the cache; a rerun streams no layer; a fill
#   killed part-way and rerun ends complete; a container
#   mounted over the cache reads a file with a cache hit and 0 registry bytes;
# - a 4 KiB read at 20 MiB into a 24 MiB file fetches about one chunk, and
#   the whole file still reads back right;
# - a registry that refuses the push (read-only) does not fail the pull;
# - mv_image_remove drops the image (and a second remove says it is gone).
set -euo pipefail
: "${MV_BUILD:?MV_BUILD must point at the build directory}"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
PROBE=$MV_BUILD/src/image/image_probe
for b in /usr/bin/docker-registry /usr/bin/skopeo /bin/busybox /usr/bin/fusermount3; do
  [ -x "$b" ] || { echo "SKIP: $b missing (scripts/bootstrap installs it)"; exit 77; }
done
[ -c /dev/fuse ] || { echo "SKIP: no /dev/fuse"; exit 77; }
T=$(mktemp -d /tmp/mvpull.XXXXXX)
PROBE_PID= ROPID=
cleanup() {
  rc=$?
  set +e
  mountpoint -q "$T/mnt" 2>/dev/null && fusermount3 -u -z "$T/mnt"
  exec 3>&- 2>/dev/null
  [ -n "$PROBE_PID" ] && { kill "$PROBE_PID" 2>/dev/null; wait "$PROBE_PID" 2>/dev/null; }
  [ -n "$ROPID" ] && { kill "$ROPID" 2>/dev/null; wait "$ROPID" 2>/dev/null; }
  "$SRC/scripts/test-registry" stop "$T/reg" || true
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT
port=$("$SRC/scripts/test-registry" start "$T/reg")
md=$("$SRC/scripts/make-test-image" "$T/img" "$port" test/pull:v1)
REF=127.0.0.1:$port/test/pull:v1
j() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# Bad references: refused, field named, nothing written.
for bad in "test/pull:v1" "127.0.0.1:$port/Test/pull" "127.0.0.1:$port/test//pull" \
           "127.0.0.1:$port/test/pull:-v1" "127.0.0.1:$port/test/pull@sha256:abc" \
           "127.0.0.1:99999/test/pull" "127.0.0.1:$port/test/pull-"; do
  if "$PROBE" pull "$T/bad" "$bad" 2>"$T/err"; then echo "FAIL: accepted $bad"; exit 1; fi
  grep -q "image_probe: pull:" "$T/err" || { cat "$T/err"; echo "FAIL: no error for $bad"; exit 1; }
done
[ ! -e "$T/bad/map.db" ] || { echo "FAIL: a bad reference created a mapping database"; exit 1; }

# First pull: indexes built by streaming, then published.
p1=$("$PROBE" pull "$T/s1" "$REF")
echo "first pull: $p1"
[ "$(j "$p1" name)" = "127.0.0.1:$port/test/pull@$md" ] || { echo "FAIL: canonical name"; exit 1; }
[ "$(j "$p1" indexes_from_registry)" = 0 ] && [ "$(j "$p1" layer_bytes)" = "$(j "$p1" layers_bytes)" ] ||
  { echo "FAIL: first pull should stream every layer once"; exit 1; }
[ "$(j "$p1" config_bytes)" -gt 0 ] || { echo "FAIL: config not kept"; exit 1; }
tag="sha256-${md#sha256:}.mvidx"
curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  "http://127.0.0.1:$port/v2/test/pull/manifests/$tag" >"$T/pub.json" ||
  { echo "FAIL: no published index manifest under $tag"; exit 1; }
python3 - "$T/pub.json" "$md" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
assert m["artifactType"] == "application/vnd.memvisor.layer-index.v1", m
assert m["subject"]["digest"] == sys.argv[2], m
assert len(m["layers"]) == 3 and all(l["annotations"]["dev.memvisor.layer.digest"].startswith("sha256:") for l in m["layers"])
print("ok: published %d layer indexes (%d bytes)" % (len(m["layers"]), sum(l["size"] for l in m["layers"])))
PY
# Second pull, same store: no layer bytes.
p2=$("$PROBE" pull "$T/s1" "$REF")
[ "$(j "$p2" layer_bytes)" = 0 ] && [ "$(j "$p2" name)" = "$(j "$p1" name)" ] ||
  { echo "FAIL: second pull streamed layers: $p2"; exit 1; }
[ "$(j "$p2" registry_bytes)" -lt 10000 ] || { echo "FAIL: second pull fetched $(j "$p2" registry_bytes) bytes"; exit 1; }
# Another host: a fresh store takes the published indexes.
p3=$("$PROBE" pull "$T/s2" "$REF")
echo "fresh store: $p3"
[ "$(j "$p3" indexes_from_registry)" = 1 ] && [ "$(j "$p3" layer_bytes)" = 0 ] ||
  { echo "FAIL: fresh store did not use the published indexes"; exit 1; }
cmp <(ls "$T/s1/indexes") <(ls "$T/s2/indexes") || { echo "FAIL: index files differ"; exit 1; }
# By digest.
p4=$("$PROBE" pull "$T/s2" "127.0.0.1:$port/test/pull@$md")
[ "$(j "$p4" name)" = "$(j "$p1" name)" ] && [ "$(j "$p4" layer_bytes)" = 0 ] || { echo "FAIL: pull by digest"; exit 1; }
echo "ok: pull twice (0 layer bytes), published indexes reused by a fresh store, pull by digest"

# Shared cache.
c1=$("$PROBE" prepopulate "$T/s3" "$T/cache" "$REF")
echo "prepopulate: $c1"
[ "$(j "$c1" files)" -gt 20 ] && [ "$(j "$c1" bytes)" -gt $((24 << 20)) ] || { echo "FAIL: cache contents"; exit 1; }
c2=$("$PROBE" prepopulate "$T/s3" "$T/cache" "$REF")
[ "$(j "$c2" files)" = "$(j "$c1" files)" ] && [ "$(j "$c2" registry_bytes)" -lt 10000 ] ||
  { echo "FAIL: second prepopulate refetched: $c2"; exit 1; }
# Crash safety: a fill killed part-way, then rerun, gives the same cache.
"$PROBE" prepopulate "$T/s6" "$T/cache2" "$REF" >/dev/null 2>&1 &
pp=$!
for _ in $(seq 400); do
  [ -n "$(find "$T/cache2/store/chunks" -type f 2>/dev/null | head -n1)" ] && break
  sleep 0.01
done
kill -9 "$pp" 2>/dev/null || true
wait "$pp" 2>/dev/null || true
c3=$("$PROBE" prepopulate "$T/s6" "$T/cache2" "$REF")
[ "$(j "$c3" files)" = "$(j "$c1" files)" ] && [ "$(j "$c3" bytes)" = "$(j "$c1" bytes)" ] ||
  { echo "FAIL: cache after a killed fill: $c3 (want $c1)"; exit 1; }
echo "ok: prepopulate idempotent and complete after a kill -9 mid-fill"

mount_probe() {   # STORE CACHE|-
  rm -f "$1/mounted"
  mkdir -p "$T/mnt"
  rm -f "$T/ctl"; mkfifo "$T/ctl"
  ${PROBE_WRAP:-} "$PROBE" mount "$1" "$2" "$REF" "$T/mnt" <"$T/ctl" 2>"$T/mount.log" &
  PROBE_PID=$!
  exec 3>"$T/ctl"
  for _ in $(seq 600); do
    [ -f "$1/mounted" ] && return 0
    kill -0 "$PROBE_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$T/mount.log" >&2; echo "FAIL: not mounted"; exit 1
}
unmount_probe() {
  fusermount3 -u "$T/mnt" || { echo "FAIL: fusermount3 -u"; exit 1; }
  exec 3>&-
  wait "$PROBE_PID" || { cat "$T/mount.log" >&2; echo "FAIL: probe exit status"; exit 1; }
  PROBE_PID=
}
stat_of() { sleep 0.1; python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1/stats.json" "$2"; }
want_sum() {   # PATH in the image's layers (last layer that has it)
  python3 - "$T/img/oci" "$1" <<'PY'
import hashlib, json, os, sys, tarfile
oci, path = sys.argv[1:]
b = os.path.join(oci, "blobs", "sha256")
man = json.load(open(os.path.join(b, json.load(open(os.path.join(oci, "index.json")))["manifests"][0]["digest"][7:])))
h = None
for l in man["layers"]:
    with tarfile.open(os.path.join(b, l["digest"][7:])) as tf:
        try:
            h = hashlib.sha256(tf.extractfile(path).read()).hexdigest()
        except KeyError:
            pass
print(h)
PY
}

# A container over the (recovered) cache; fresh store.
mount_probe "$T/s4" "$T/cache2"
[ "$(sha256sum <"$T/mnt/data/text-4095" | cut -d' ' -f1)" = "$(want_sum data/text-4095)" ] ||
  { echo "FAIL: content via the cache"; exit 1; }
[ "$(sha256sum <"$T/mnt/bin/busybox" | cut -d' ' -f1)" = "$(sha256sum </bin/busybox | cut -d' ' -f1)" ] ||
  { echo "FAIL: busybox via the cache"; exit 1; }
hits=$(stat_of "$T/s4" cache_hits) reg=$(stat_of "$T/s4" registry_bytes)
[ "$hits" -ge 2 ] && [ "$reg" = 0 ] && [ "$(stat_of "$T/s4" cache_hit_bytes)" -gt 4095 ] ||
  { cat "$T/s4/stats.json"; echo "FAIL: cache hit expected with 0 registry bytes"; exit 1; }
unmount_probe
echo "ok: cache hits $hits, registry bytes $reg"

# A container without the cache: 4 KiB at 20 MiB into the 24 MiB file.
mount_probe "$T/s5" -
dd if="$T/mnt/big/random-24m" bs=4096 skip=$((20 * 256)) count=1 status=none | sha256sum | cut -d' ' -f1 >"$T/got4k"
one=$(stat_of "$T/s5" registry_bytes)
python3 - "$T/img/oci" "$T/got4k" <<'PY'
import hashlib, json, os, sys, tarfile
oci, got = sys.argv[1:]
b = os.path.join(oci, "blobs", "sha256")
man = json.load(open(os.path.join(b, json.load(open(os.path.join(oci, "index.json")))["manifests"][0]["digest"][7:])))
with tarfile.open(os.path.join(b, man["layers"][2]["digest"][7:])) as tf:
    f = tf.extractfile("big/random-24m"); f.seek(20 << 20)
    want = hashlib.sha256(f.read(4096)).hexdigest()
assert open(got).read().strip() == want, "4 KiB at 20 MiB: content differs"
PY
[ "$one" -gt 0 ] && [ "$one" -lt $((3 << 20)) ] ||
  { echo "FAIL: a 4 KiB read at 20 MiB fetched $one bytes (want about one 1 MiB chunk)"; exit 1; }
[ "$(sha256sum <"$T/mnt/big/random-24m" | cut -d' ' -f1)" = "$(want_sum big/random-24m)" ] ||
  { echo "FAIL: whole large file content"; exit 1; }
all=$(stat_of "$T/s5" registry_bytes)
unmount_probe
echo "ok: 4 KiB at 20 MiB of a 24 MiB file fetched $one bytes; the whole file then $all"

# A registry that refuses pushes: the pull still succeeds, nothing published.
# A second docker-registry serves the same storage read-only; the image is
# copied to a repository where nobody published indexes yet.
skopeo copy -q --src-tls-verify=false --dest-tls-verify=false "docker://$REF" \
  "docker://127.0.0.1:$port/test/ro:v1" >&2
mkdir -p "$T/ro"
roport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -e "s/127.0.0.1:$port/127.0.0.1:$roport/" "$T/reg/registry.yml" >"$T/ro/registry.yml"
printf '  maintenance:\n    readonly:\n      enabled: true\n' >>"$T/ro/registry.yml"
python3 - "$T/ro/registry.yml" <<'PY'
import sys
# the maintenance block belongs under storage: move it right after "storage:"
lines = open(sys.argv[1]).read().splitlines()
tail = lines[-3:]
lines = lines[:-3]
i = lines.index("storage:")
open(sys.argv[1], "w").write("\n".join(lines[:i + 1] + tail + lines[i + 1:]) + "\n")
PY
setsid /usr/bin/docker-registry serve "$T/ro/registry.yml" >"$T/ro/registry.log" 2>&1 </dev/null &
ROPID=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$roport/v2/" && break; sleep 0.1; done
ro=$("$PROBE" pull "$T/s7" "127.0.0.1:$roport/test/ro:v1" 2>"$T/ro.err") ||
  { cat "$T/ro.err"; kill "$ROPID"; echo "FAIL: pull from a read-only registry"; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/test/ro/manifests/$tag")
kill "$ROPID"; wait "$ROPID" 2>/dev/null || true
ROPID=
[ "$(j "$ro" layer_bytes)" = "$(j "$ro" layers_bytes)" ] && [ "$code" = 404 ] &&
  grep -q "layer indexes not published" "$T/ro.err" ||
  { cat "$T/ro.err"; echo "FAIL: read-only registry: $ro, tag HTTP $code"; exit 1; }
echo "ok: a registry refusing the push: pull fine, indexes built, nothing published"

# Remove.
"$PROBE" rm "$T/s1" "$(j "$p1" name)"
[ -z "$(ls "$T/s1/indexes")" ] || { echo "FAIL: indexes left after rm"; exit 1; }
if "$PROBE" rm "$T/s1" "$(j "$p1" name)" 2>"$T/err"; then echo "FAIL: second rm succeeded"; exit 1; fi
grep -q "no image" "$T/err" || { cat "$T/err"; echo "FAIL: second rm error"; exit 1; }
echo "{\"pull_layer_bytes\": $(j "$p1" layer_bytes), \"second_pull_registry_bytes\": $(j "$p2" registry_bytes), \"fresh_store_layer_bytes\": $(j "$p3" layer_bytes), \"cache_files\": $(j "$c1" files), \"cache_hit_registry_bytes\": $reg, \"read_4k_at_20m_bytes\": $one}"
echo "ok: image pull, published indexes, shared cache, chunk-by-chunk fetch, remove"
