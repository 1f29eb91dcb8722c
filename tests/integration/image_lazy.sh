#!/usr/bin/env bash
# Image library against a real registry: starts docker-registry on loopback
# (scripts/test-registry), pushes the generated test image (scripts/
# make-test-image), and runs image_probe: layer indexes built by streaming,
# one file read lazily (must fetch a small part of its layer), the same file
# again from the chunk store (must fetch nothing), every member's metadata
# and content compared with the OCI layout read by python's tarfile.
set -euo pipefail
: "${MV_BUILD:?MV_BUILD must point at the build directory}"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
PROBE=$MV_BUILD/src/image/image_probe
for b in /usr/bin/docker-registry /usr/bin/skopeo /bin/busybox; do
  [ -x "$b" ] || { echo "SKIP: $b missing (scripts/bootstrap installs it)"; exit 77; }
done
T=$(mktemp -d /tmp/mvimg.XXXXXX)
cleanup() { rc=$?; "$SRC/scripts/test-registry" stop "$T/reg" || true; rm -rf "$T"; exit $rc; }
trap cleanup EXIT
port=$("$SRC/scripts/test-registry" start "$T/reg")
"$SRC/scripts/make-test-image" "$T/img" "$port" test/lazy:v1 >/dev/null
${PROBE_WRAP:-} "$PROBE" "http://127.0.0.1:$port" test/lazy v1 "$T/store" data/text-4096 >"$T/probe.tsv" 2>"$T/probe.json" ||
  { cat "$T/probe.json" >&2; exit 1; }
cat "$T/probe.json"
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
