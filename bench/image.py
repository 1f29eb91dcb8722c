#!/usr/bin/env python3
"""bench/image: time from starting a container of a ~120 MiB, 4-layer image
(scripts/make-bench-image, pushed to a loopback docker-registry) to its first
output line, when the command reads under 10 % of the image (busybox and
1 MiB of a 64 MiB file):
  (a) lazy, empty cache: a fresh state dir ("another host": the layer indexes
      were published to the registry by an earlier pull elsewhere);
  (b) lazy over the host-wide cache, prepopulated beforehand;
  (c) the full-pull baseline with real tools in the same run: skopeo copy +
      umoci unpack + crun run.
(a) and (b) start with the image not pulled on that state dir: pull (layer
indexes from the registry), FUSE mount, crun run over the FUSE root. Bytes
from the registry in each case come from the registry's access log. Prints
JSON with medians and the ratios (a)/(c), (b)/(c) (targets 0.3 and 0.1).
Driver: `memvisor container run IMAGE CMD` against a daemon started (untimed)
on a fresh state dir for each run; with --library, or when the CLI has no
`container run`, the library path instead (image_probe mount, then crun run
over the FUSE root). The cache is filled with `memvisor cache prepopulate`,
or image_probe's prepopulate (same library call) if the daemon refuses.
Usage: image.py BUILD_DIR [--quick] [--library]"""
import json, os, re, shutil, statistics, subprocess, sys, tempfile, time

build = os.path.abspath(sys.argv[1])
quick = "--quick" in sys.argv
reps = 1 if quick else 3
src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
probe = f"{build}/src/image/image_probe"
cli = f"{build}/src/cli/memvisor"
use_cli = "--library" not in sys.argv and subprocess.run(
    [cli, "container", "--help"], capture_output=True, text=True).stdout.find("run ") >= 0
tmp = tempfile.mkdtemp(prefix="mvbenchimg.")
CMD = ["sh", "-c", "cat /bin/busybox >/dev/null && head -c 1048576 /data/big1 | wc -c"]
WANT = "1048576"
procs = []


def sh(*args, **kw):
    return subprocess.run(list(args), check=True, stdout=subprocess.PIPE, text=True, **kw).stdout.strip()


def reg_bytes():
    """Body bytes the registry has sent so far (combined-format access log)."""
    total = 0
    with open(f"{tmp}/reg/registry.log", errors="replace") as f:
        for line in f:
            m = re.search(r'"(GET|HEAD) [^"]*" (\d{3}) (\d+)', line)
            if m and m.group(1) == "GET":
                total += int(m.group(3))
    return total


def settle_log():
    time.sleep(0.3)   # the registry writes its access log line after the reply


def spec(bundle, rootfs):
    """An OCI runtime config for CMD over rootfs (crun's default spec)."""
    path = f"{bundle}/config.json"
    if not os.path.exists(path):
        sh("crun", "spec", cwd=bundle)
    c = json.load(open(path))
    c["process"]["terminal"] = False
    c["process"]["args"] = CMD
    c["process"]["env"] = ["PATH=/bin"]
    c["process"]["cwd"] = "/"
    c["root"] = {"path": rootfs, "readonly": True}
    c.setdefault("linux", {}).pop("uidMappings", None)
    c["linux"].pop("gidMappings", None)
    c["linux"]["namespaces"] = [n for n in c["linux"].get("namespaces", []) if n["type"] != "user"]
    json.dump(c, open(path, "w"))


def crun_first_line(bundle, name, t0):
    # crun refuses a hybrid cgroup layout whose v2 mount has controllers: hide
    # it in a mount namespace of crun's own (as memvisor-ctr does).
    hide = ("grep -qs . /sys/fs/cgroup/unified/cgroup.controllers && "
            "umount -l /sys/fs/cgroup/unified; exec crun run -b \"$0\" \"$1\"")
    p = subprocess.Popen(["unshare", "-m", "sh", "-c", hide, bundle, name], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    t1 = time.monotonic()
    _, err = p.communicate(timeout=120)
    if line != WANT:
        raise SystemExit(f"container printed {line!r}, wanted {WANT}: {err}")
    return t1 - t0


def lazy(name, cache):
    store, mnt, bundle = f"{tmp}/{name}", f"{tmp}/{name}-mnt", f"{tmp}/{name}-bundle"
    os.makedirs(mnt)
    os.makedirs(bundle)
    spec(bundle, mnt)
    b0 = reg_bytes()
    t0 = time.monotonic()
    p = subprocess.Popen([probe, "mount", store, cache or "-", REF, mnt], stdin=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    procs.append(p)
    while not os.path.exists(f"{store}/mounted"):
        if p.poll() is not None:
            raise SystemExit("image_probe mount failed: " + p.stderr.read().decode())
        time.sleep(0.002)
    dt = crun_first_line(bundle, name, t0)
    stats = json.load(open(f"{store}/stats.json"))
    subprocess.run(["fusermount3", "-u", mnt])
    p.stdin.close()
    p.wait(timeout=60)
    settle_log()
    return dt, reg_bytes() - b0, stats


def daemon(name, cache):
    sock = f"{tmp}/{name}.sock"
    p = subprocess.Popen([f"{build}/src/daemon/memvisord", "--socket", sock, "--state-dir",
                          f"{tmp}/{name}", "--mem-capacity", "1G", "--image-cache", cache],
                         stderr=open(f"{tmp}/{name}.log", "w"))
    procs.append(p)
    for _ in range(400):
        if os.path.exists(sock):
            break
        if p.poll() is not None:
            raise SystemExit(f"memvisord exited: {open(f'{tmp}/{name}.log').read()}")
        time.sleep(0.025)
    return p, dict(os.environ, MEMVISOR_SOCKET=sock)


def stop(p):
    p.terminate()
    p.wait(timeout=60)


def lazy_cli(name, cache):
    d, env = daemon(name, cache)
    b0 = reg_bytes()
    t0 = time.monotonic()
    p = subprocess.Popen([cli, "container", "run", "--name", name, REF, *CMD], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    dt = time.monotonic() - t0
    _, err = p.communicate(timeout=120)
    if line != WANT:
        raise SystemExit(f"container printed {line!r}, wanted {WANT}: {err}")
    show = json.loads(sh(cli, "container", "show", name, "--json", env=env))
    subprocess.run([cli, "container", "rm", name], env=env, capture_output=True)
    stop(d)
    settle_log()
    return dt, reg_bytes() - b0, show.get("fs", {})


def prepopulate_cli(cache):
    d, env = daemon("hostc", cache)
    r = subprocess.run([cli, "cache", "prepopulate", REF, "--json"], env=env, capture_output=True,
                       text=True)
    stop(d)
    if r.returncode == 0:
        return json.loads(r.stdout), "memvisor cache prepopulate"
    st = json.loads(sh(probe, "prepopulate", f"{tmp}/hostc-lib", cache, REF))
    return st, "image_probe prepopulate (memvisor cache prepopulate failed: %s)" % r.stderr.strip()


def full(name):
    d = f"{tmp}/{name}"
    os.makedirs(d)
    b0 = reg_bytes()
    t0 = time.monotonic()
    sh("skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{REF}", f"oci:{d}/oci:bench")
    sh("umoci", "unpack", "--image", f"{d}/oci:bench", f"{d}/bundle")
    spec(f"{d}/bundle", f"{d}/bundle/rootfs")
    dt = crun_first_line(f"{d}/bundle", name, t0)
    settle_log()
    return dt, reg_bytes() - b0


try:
    port = sh(f"{src}/scripts/test-registry", "start", f"{tmp}/reg")
    md = sh(f"{src}/scripts/make-bench-image", f"{tmp}/img", port, "bench/big:v1")
    REF = f"127.0.0.1:{port}/bench/big:v1"
    image_bytes = sum(os.path.getsize(os.path.join(r, f))
                      for r, _, fs in os.walk(f"{tmp}/img/oci/blobs") for f in fs)
    # "Another host" pulls first: builds the layer indexes and publishes them.
    first = json.loads(sh(probe, "pull", f"{tmp}/host0", REF))
    # The cache is filled ahead of time (its own state dir, like a host's).
    if use_cli:
        cache, filled_by = prepopulate_cli(f"{tmp}/cache")
    else:
        cache = json.loads(sh(probe, "prepopulate", f"{tmp}/hostc", f"{tmp}/cache", REF))
        filled_by = "image_probe prepopulate"
    a, b, c = [], [], []
    for i in range(reps):   # interleaved: the machine's noise hits all three alike
        c.append(full(f"c{i}"))
        if use_cli:
            a.append(lazy_cli(f"a{i}", f"{tmp}/empty-cache-{i}"))
            b.append(lazy_cli(f"b{i}", f"{tmp}/cache"))
        else:
            a.append(lazy(f"a{i}", None))
            b.append(lazy(f"b{i}", f"{tmp}/cache"))
    med = lambda xs: statistics.median(x[0] for x in xs)
    out = {
        "image_bytes": image_bytes, "layers": first["layers"],
        "command": " ".join(CMD[2:]), "repetitions": reps,
        "first_pull_index_build_layer_bytes": first["layer_bytes"],
        "published_index_fetch": "fresh state dir per run (a) and (b)",
        "cache_prepopulate": cache,
        "a_times_s": [round(x[0], 3) for x in a], "b_times_s": [round(x[0], 3) for x in b],
        "c_times_s": [round(x[0], 3) for x in c],
        "a_lazy_empty_cache_s": round(med(a), 3),
        "b_lazy_prepopulated_cache_s": round(med(b), 3),
        "c_full_pull_skopeo_umoci_crun_s": round(med(c), 3),
        "a_registry_bytes": a[-1][1], "b_registry_bytes": b[-1][1], "c_registry_bytes": c[-1][1],
        "a_fs_stats": a[-1][2], "b_fs_stats": b[-1][2],
        "ratio_a_over_c": round(med(a) / med(c), 3),
        "ratio_b_over_c": round(med(b) / med(c), 3),
        "target_a_over_c": 0.3, "target_b_over_c": 0.1,
        "driver": "memvisor container run" if use_cli else "library (image_probe mount + crun run)",
        "cache_filled_by": filled_by,
    }
    print(json.dumps(out, indent=1))
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for d in os.listdir(tmp):
        if d.endswith("-mnt"):
            subprocess.run(["fusermount3", "-u", "-z", f"{tmp}/{d}"], stderr=subprocess.DEVNULL)
    subprocess.run([f"{src}/scripts/test-registry", "stop", f"{tmp}/reg"], stderr=subprocess.DEVNULL)
    shutil.rmtree(tmp, ignore_errors=True)
