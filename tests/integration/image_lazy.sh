#!/usr/bin/env bash
# Image library against a real registry: starts docker-registry on loopback
# (scripts/test-registry), pushes the generated test image (scripts/
# make-test-image), and runs image_probe: layer indexes built by streaming,
# one file read lazily (must fetch a small part of its layer), the same file
# again from the chunk store (must fetch nothing), every member's metadata
# and content compared with the OCI layout read by python's tarfile. Then
# the mapping table and two FUSE roots (containers a and b of the image),
# checked with ordinary tools: the tree with whiteouts and opaque dirs
# applied, links, lazy reads (a small file costs a small part of its layer,
# a second read nothing), copy-up writes that container b never sees,
# directory renames (the subtree moves; not under itself, not over a
# non-empty directory), and a clean fusermount3 -u.
set -euo pipefail
: "${MV_BUILD:?MV_BUILD must point at the build directory}"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
PROBE=$MV_BUILD/src/image/image_probe
for b in /usr/bin/docker-registry /usr/bin/skopeo /bin/busybox /usr/bin/fusermount3; do
  [ -x "$b" ] || { echo "SKIP: $b missing (scripts/bootstrap installs it)"; exit 77; }
done
[ -c /dev/fuse ] || { echo "SKIP: no /dev/fuse"; exit 77; }
T=$(mktemp -d /tmp/mvimg.XXXXXX)
PROBE_PID=
cleanup() {
  rc=$?
  set +e
  for d in "$T/mnt-a" "$T/mnt-b"; do mountpoint -q "$d" 2>/dev/null && fusermount3 -u -z "$d"; done
  exec 3>&- 2>/dev/null
  [ -n "$PROBE_PID" ] && { kill "$PROBE_PID" 2>/dev/null; wait "$PROBE_PID" 2>/dev/null; }
  "$SRC/scripts/test-registry" stop "$T/reg" || true
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT
port=$("$SRC/scripts/test-registry" start "$T/reg")
"$SRC/scripts/make-test-image" "$T/img" "$port" test/lazy:v1 >/dev/null
mkdir -p "$T/mnt-a" "$T/mnt-b"
mkfifo "$T/ctl"
${PROBE_WRAP:-} "$PROBE" "http://127.0.0.1:$port" test/lazy v1 "$T/store" data/text-4096 \
  "$T/mnt-a" "$T/mnt-b" <"$T/ctl" >"$T/probe.tsv" 2>"$T/probe.log" &
PROBE_PID=$!
exec 3>"$T/ctl"   # the probe serves until this closes
for _ in $(seq 600); do
  [ -f "$T/store/mounted" ] && break
  kill -0 "$PROBE_PID" 2>/dev/null || { cat "$T/probe.log" >&2; echo "FAIL: probe exited"; exit 1; }
  sleep 0.1
done
[ -f "$T/store/mounted" ] || { cat "$T/probe.log" >&2; echo "FAIL: not mounted"; exit 1; }
grep '"layer0_blob_bytes"' "$T/probe.log" >"$T/probe.json"
cat "$T/probe.log"
python3 - "$T/img/oci" "$T/probe.tsv" "$T/probe.json" <<'PY'
import hashlib, json, os, sys, tarfile
oci, tsv, fig = sys.argv[1:]
blobs = os.path.join(oci, "blobs", "sha256")
idx = json.load(open(os.path.join(oci, "index.json")))
man = json.load(open(os.path.join(blobs, idx["manifests"][0]["digest"][7:])))
types = {tarfile.REGTYPE: 1, tarfile.AREGTYPE: 1, tarfile.DIRTYPE: 2, tarfile.SYMTYPE: 3, tarfile.LNKTYPE: 4}
want = []
for i, l in enumerate(man["layers"]):
    with tarfile.open(os.path.join(blobs, l["digest"][7:])) as tf:
        for m in tf.getmembers():
            name = os.path.normpath(m.name)
            if name == ".":
                continue
            t = types[m.type]
            data = tf.extractfile(m).read() if m.isreg() else None
            link = m.linkname if m.issym() or m.islnk() else "-"
            want.append("\t".join([str(i), name, str(t), "%o" % m.mode, str(len(data) if data is not None else 0),
                                   link or "-", "sha256:" + hashlib.sha256(data).hexdigest() if data is not None else "-"]))
got = open(tsv).read().splitlines()
if got != want:
    for a, b in zip(got, want):
        if a != b:
            print("FAIL: got  ", a, "\n      want ", b)
            break
    print("FAIL: %d members probed, %d in the layout" % (len(got), len(want)))
    sys.exit(1)
f = json.loads(open(fig).read())
assert f["lazy_fetched_bytes"] > 0, f
assert f["lazy_fetched_bytes"] * 4 < f["layer0_blob_bytes"], "lazy read fetched too much: %s" % f
assert f["second_read_fetched_bytes"] == 0, f
print("ok: %d members match; one %d-byte file cost %d of %d layer bytes (%.1f%%)" % (
    len(got), f["file_bytes"], f["lazy_fetched_bytes"], f["layer0_blob_bytes"],
    100.0 * f["lazy_fetched_bytes"] / f["layer0_blob_bytes"]))
PY

# ---- FUSE roots ----
A=$T/mnt-a B=$T/mnt-b
mountpoint -q "$A" && mountpoint -q "$B" || { echo "FAIL: FUSE roots not mounted"; exit 1; }
stat_of() { sleep 0.1; python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]][sys.argv[3]])' "$T/store/stats.json" "$1" "$2"; }
# Metadata alone fetches nothing.
t0=$(date +%s%N)
ls -lR "$B" >"$T/lsR.txt"
lsR_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
ls -la "$A" "$A/data" >/dev/null
stat "$A/etc/motd" >/dev/null
[ "$(stat_of a registry_bytes)" = 0 ] && [ "$(stat_of b registry_bytes)" = 0 ] ||
  { echo "FAIL: metadata fetched data"; exit 1; }
# One small file: a small part of its layer, then nothing.
layer0=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layer0_blob_bytes"])' "$T/probe.json")
want=$(python3 - "$T/img/oci" <<'PY'
import hashlib, json, os, sys, tarfile
oci = sys.argv[1]; b = os.path.join(oci, "blobs", "sha256")
man = json.load(open(os.path.join(b, json.load(open(os.path.join(oci, "index.json")))["manifests"][0]["digest"][7:])))
with tarfile.open(os.path.join(b, man["layers"][0]["digest"][7:])) as tf:
    print(hashlib.sha256(tf.extractfile("data/text-4095").read()).hexdigest())
PY
)
got=$(cat "$A/data/text-4095" | sha256sum | cut -d' ' -f1)
[ "$got" = "$want" ] || { echo "FAIL: data/text-4095 content"; exit 1; }
small=$(stat_of a registry_bytes)
[ "$small" -gt 0 ] && [ $((small * 4)) -lt "$layer0" ] || { echo "FAIL: small read fetched $small of $layer0"; exit 1; }
cat "$A/data/text-4095" >/dev/null
[ "$(stat_of a registry_bytes)" = "$small" ] || { echo "FAIL: second read fetched"; exit 1; }

# The whole tree against the layers merged with whiteouts and opaque dirs.
(cd "$A" && find . -mindepth 1 -printf '%P\t%y\t%m\t%s\t%l\n' | LC_ALL=C sort) >"$T/tree.txt"
(cd "$A" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) >"$T/sums.txt"
python3 - "$T/img/oci" "$T/tree.txt" "$T/sums.txt" <<'PY'
import hashlib, json, os, sys, tarfile
oci, tree, sums = sys.argv[1:]
b = os.path.join(oci, "blobs", "sha256")
man = json.load(open(os.path.join(b, json.load(open(os.path.join(oci, "index.json")))["manifests"][0]["digest"][7:])))
fs = {}   # path -> (type, mode, size, link, sha)
for l in man["layers"]:
    with tarfile.open(os.path.join(b, l["digest"][7:])) as tf:
        for m in tf.getmembers():
            p = os.path.normpath(m.name)
            d, n = os.path.split(p)
            if n == ".wh..wh..opq":
                for k in [k for k in fs if k.startswith(d + "/")]:
                    del fs[k]
                continue
            if n.startswith(".wh."):
                t = os.path.join(d, n[4:])
                for k in [k for k in fs if k == t or k.startswith(t + "/")]:
                    del fs[k]
                continue
            if m.islnk():
                fs[p] = fs[os.path.normpath(m.linkname)]
            elif m.isdir():
                fs[p] = ("d", m.mode, None, "", None)
            elif m.issym():
                fs[p] = ("l", m.mode, len(m.linkname), m.linkname, None)
            else:
                data = tf.extractfile(m).read()
                fs[p] = ("f", m.mode, len(data), "", hashlib.sha256(data).hexdigest())
want = sorted("%s\t%s\t%o\t%s\t%s" % (p, t, mode & 0o7777, size if size is not None else "*", link)
              for p, (t, mode, size, link, _) in fs.items())
got = []
for line in open(tree).read().splitlines():
    p, t, mode, size, link = line.split("\t")
    got.append("\t".join([p, t, mode, "*" if t == "d" else size, link]))
got.sort()
if got != want:
    print("FAIL: tree differs\n  only in mount: %s\n  only in image: %s" % (
        sorted(set(got) - set(want))[:5], sorted(set(want) - set(got))[:5]))
    sys.exit(1)
for line in open(sums).read().splitlines():
    h, p = line.split("  ", 1)
    p = os.path.normpath(p)
    if fs[p][4] != h:
        print("FAIL: content of", p); sys.exit(1)
assert "data/gone.txt" not in fs and "opq/old-a" not in fs and "opq/new" in fs
print("ok: FUSE tree of %d entries matches the merged layers" % len(got))
PY
[ "$(readlink "$A/data/abs-link")" = /etc/hostname ] && [ "$(readlink "$A/data/escape-link")" = ../../../../etc/shadow ] &&
  [ "$(readlink "$A/bin/sh")" = busybox ] || { echo "FAIL: readlink"; exit 1; }
[ "$(stat -c %i "$A/data/hard")" = "$(stat -c %i "$A/data/text-512")" ] && [ "$(stat -c %h "$A/data/hard")" = 2 ] ||
  { echo "FAIL: hard link"; exit 1; }
[ "$(cat "$A/data/rel-link")" = "$(cat "$A/data/text-1")" ] ||
  { echo "FAIL: symlink read"; exit 1; }
[ ! -e "$A/data/gone.txt" ] && [ ! -e "$A/opq/old-a" ] && [ ! -e "$A/opq/sub" ] || { echo "FAIL: whiteout"; exit 1; }

# Writes copy up into container a only.
orig1=$(sha256sum <"$B/data/text-1")
ino_motd=$(stat -c %i "$A/etc/motd")
echo "written by a" >"$A/etc/motd"
echo "appended" >>"$A/data/text-1"
mkdir "$A/newdir" && echo new >"$A/newdir/file"
rm "$A/etc/hostname"
mv "$A/data/text-0" "$A/data/renamed"
truncate -s 10 "$A/data/text-65537"
chmod 600 "$A/data/text-511"
[ "$(cat "$A/etc/motd")" = "written by a" ] && [ "$(stat -c %i "$A/etc/motd")" = "$ino_motd" ] &&
  [ "$(tail -n1 "$A/data/text-1")" = appended ] && [ "$(cat "$A/newdir/file")" = new ] &&
  [ ! -e "$A/etc/hostname" ] && [ -e "$A/data/renamed" ] && [ ! -e "$A/data/text-0" ] &&
  [ "$(stat -c %s "$A/data/text-65537")" = 10 ] && [ "$(stat -c %a "$A/data/text-511")" = 600 ] ||
  { echo "FAIL: writes in container a"; ls -la "$A/etc" "$A/data"; exit 1; }
# Directory renames move the subtree; b keeps the image's tree.
(cd "$A/deep" && find . | LC_ALL=C sort) >"$T/deep.before"
mv "$A/deep" "$A/deep2"
[ ! -e "$A/deep" ] && [ "$(cd "$A/deep2" && find . | LC_ALL=C sort)" = "$(cat "$T/deep.before")" ] &&
  [ -d "$B/deep" ] && [ ! -e "$B/deep2" ] || { echo "FAIL: directory rename"; exit 1; }
python3 -c 'import os,sys; os.rename(sys.argv[1], sys.argv[2])' "$A/deep2" \
  "$A/deep2/$(ls "$A/deep2" | head -n1)/inside" 2>/dev/null && { echo "FAIL: moved a directory under itself"; exit 1; }
mkdir "$A/emptydir" && mv "$A/deep2" "$A/emptydir" && [ -d "$A/emptydir/deep2" ] ||
  { echo "FAIL: rename into a directory"; exit 1; }
python3 -c 'import os,sys; os.rename(sys.argv[1], sys.argv[2])' "$A/emptydir/deep2" "$A/opq" 2>/dev/null &&
  { echo "FAIL: rename over a non-empty directory"; exit 1; }
mv -T "$A/emptydir/deep2" "$A/deep" && rmdir "$A/emptydir" &&
  [ "$(cd "$A/deep" && find . | LC_ALL=C sort)" = "$(cat "$T/deep.before")" ] || { echo "FAIL: rename back"; exit 1; }
rmdir "$A/opq" 2>/dev/null && { echo "FAIL: rmdir of a non-empty dir"; exit 1; }
rm "$A/newdir/file" && rmdir "$A/newdir" && [ ! -e "$A/newdir" ] || { echo "FAIL: rmdir"; exit 1; }
[ "$(cat "$B/etc/motd")" = "layer two" ] && [ "$(cat "$B/etc/hostname")" = memvisor-test ] &&
  [ "$(sha256sum <"$B/data/text-1")" = "$orig1" ] && [ -e "$B/data/text-0" ] && [ ! -e "$B/data/renamed" ] &&
  [ "$(stat -c %s "$B/data/text-65537")" = 65537 ] && [ "$(stat -c %a "$B/data/text-511")" = 644 ] ||
  { echo "FAIL: container b saw a's writes"; exit 1; }
[ -n "$(ls -A "$T/store/upper-a")" ] && [ -z "$(ls -A "$T/store/upper-b")" ] || { echo "FAIL: upper dirs"; exit 1; }
# b reads what a fetched from the shared chunks: no registry traffic.
cat "$B/data/text-4095" >/dev/null
[ "$(stat_of b registry_bytes)" = 0 ] || { echo "FAIL: b refetched a's chunks"; exit 1; }

fusermount3 -u "$A" && fusermount3 -u "$B" || { echo "FAIL: fusermount3 -u"; exit 1; }
exec 3>&-
wait "$PROBE_PID" || { cat "$T/probe.log" >&2; echo "FAIL: probe exit status"; exit 1; }
PROBE_PID=
mountpoint -q "$A" && { echo "FAIL: still mounted"; exit 1; }
echo "{\"fuse_small_file\": \"data/text-4095\", \"fuse_small_file_fetched_bytes\": $small, \"layer0_blob_bytes\": $layer0, \"ls_lR_ms\": $lsR_ms, \"ls_lR_lines\": $(wc -l <"$T/lsR.txt")}"
echo "ok: FUSE roots: lazy reads, copy-up writes isolated per container, clean unmount"
