#!/usr/bin/env python3
"""bench/handover: downtime of a zero-copy hand-over (hot migration / VMM
upgrade on one host) for 1, 4 and 8 GiB guests whose working set is fully
resident, against the anchor measured in the same run: copying that resident
memory once (what any copying hand-over must pay at least). Prints JSON.
Usage: handover.py BUILD_DIR [--quick]"""
import json, mmap, os, shutil, statistics, subprocess, sys, tempfile, time

build = os.path.abspath(sys.argv[1])
quick = "--quick" in sys.argv
sizes = [1, 2] if quick else [1, 4, 8]
reps = 3 if quick else 7
tmp = tempfile.mkdtemp(prefix="mvbench.")
sock = f"{tmp}/api.sock"
env = dict(os.environ, MEMVISOR_SOCKET=sock)
cli = f"{build}/src/cli/memvisor"


def mv(*args):
    out = subprocess.run([cli, *args], env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out) if "--json" in args else out


def copy_anchor_ms(nbytes):
    """Median time to memcpy nbytes between two populated buffers."""
    a, b = mmap.mmap(-1, nbytes), mmap.mmap(-1, nbytes)
    va, vb = memoryview(a), memoryview(b)
    for off in range(0, nbytes, 4096):      # populate both: time the copy, not faults
        va[off:off + 1] = b"\x5a"
        vb[off:off + 1] = b"\x00"
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        vb[:] = va                               # one memcpy
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


daemon = subprocess.Popen([f"{build}/src/daemon/memvisord", "--socket", sock, "--state-dir",
                           f"{tmp}/state", "--mem-capacity", "64G"],
                          stderr=subprocess.DEVNULL, env=env)
try:
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    results = []
    for gib in sizes:
        name = f"g{gib}"
        wss = f"{gib * 1024 // 2}M"    # half the guest resident and being written
        mv("vm", "create", name, "--memory", f"{gib}G", "--workload", "memtouch", "--wss", wss,
           "--pattern", "seq", "--rate", "200000")
        while mv("vm", "show", name, "--json")["stats"]["resident_bytes"] < gib << 29:
            time.sleep(0.2)
        down = [mv("vm", "migrate", name, "--local", "--json")["downtime_us"] / 1e3
                for _ in range(reps)]
        ok = mv("vm", "verify", name, "--json")["ok"]
        resident = mv("vm", "show", name, "--json")["stats"]["resident_bytes"]
        anchor = copy_anchor_ms(resident)
        mv("vm", "rm", "--force", name)
        results.append({"guest_gib": gib, "resident_bytes": resident, "verify_ok": ok,
                        "downtime_ms_median": round(statistics.median(down), 3),
                        "downtime_ms_max": round(max(down), 3),
                        "anchor_copy_resident_ms": round(anchor, 3),
                        "ratio_downtime_over_copy": round(statistics.median(down) / anchor, 4)})
    flat = results[-1]["downtime_ms_median"] / max(results[0]["downtime_ms_median"], 1e-3)
    print(json.dumps({"bench": "handover", "reps": reps, "statistic": "median",
                      "results": results, "ratio_largest_over_smallest_downtime": round(flat, 3),
                      "target": {"downtime_ms_at_8g": 10, "flat_in_size": True}}))
finally:
    daemon.terminate()
    daemon.wait()
    subprocess.run(["pkill", "-9", "-f", "--", f"--ctl {tmp}/state/"])
    shutil.rmtree(tmp, ignore_errors=True)
