#!/usr/bin/env python3
"""bench/migrate: live migration between two daemons on loopback for 1, 4 and
8 GiB guests running memtouch at several dirty rates: total time, downtime and
bytes sent, against the raw bound measured in the same run (the same number of
bytes pushed through a loopback TCP socket with no processing). Also the
zero-copy hand-over on one host at each size. Prints JSON.
Usage: migrate.py BUILD_DIR [--quick]"""
import json, os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

build = os.path.abspath(sys.argv[1])
quick = "--quick" in sys.argv
sizes = [1] if quick else [1, 4, 8]
rates = [0, 20000] if quick else [0, 20000, 100000]   # pages/s; 0 = idle guest
tmp = tempfile.mkdtemp(prefix="mvbench.")
cli = f"{build}/src/cli/memvisor"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


port = free_port()


def daemon(name, *extra):
    sock = f"{tmp}/{name}.sock"
    p = subprocess.Popen([f"{build}/src/daemon/memvisord", "--socket", sock, "--state-dir",
                          f"{tmp}/{name}", "--mem-capacity", "20G", *extra],
                         stderr=subprocess.DEVNULL)
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    return p, sock


def mv(sock, *args):
    out = subprocess.run([cli, *args], env=dict(os.environ, MEMVISOR_SOCKET=sock), check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out) if "--json" in args else out


def raw_bound(nbytes):
    """Seconds to push nbytes through loopback TCP, nothing else done."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = [0]

    def sink():
        c, _ = srv.accept()
        buf = bytearray(4 << 20)   # recv_into: no allocation, just the kernel copy
        while (n := c.recv_into(buf)):
            got[0] += n
        c.close()

    t = threading.Thread(target=sink)
    t.start()
    c = socket.create_connection(srv.getsockname())
    buf = memoryview(b"\x5a" * (4 << 20))
    t0 = time.perf_counter()
    left = nbytes
    while left > 0:
        c.sendall(buf[:min(left, len(buf))])
        left -= len(buf)
    c.close()
    t.join()
    return time.perf_counter() - t0


a, a_sock = daemon("a")
b, b_sock = daemon("b", "--migrate-listen", f"127.0.0.1:{port}")
results = []
try:
    for gib in sizes:
        for rate in rates:
            name = f"g{gib}r{rate}"
            wss = f"{gib * 1024 // 2}M"
            args = ["vm", "create", name, "--memory", f"{gib}G", "--workload", "memtouch", "--wss",
                    wss, "--pattern", "random" if rate else "seq", "--rate", str(rate or 400000)]
            mv(a_sock, *args)
            while mv(a_sock, "vm", "show", name, "--json")["stats"]["resident_bytes"] < gib << 29:
                time.sleep(0.2)
            if rate == 0:
                mv(a_sock, "vm", "pause", name)   # an idle guest: nothing dirtied while sending
            r = mv(a_sock, "vm", "migrate", name, "--to", f"127.0.0.1:{port}", "--json")
            mg = r["migration"]
            ok = mv(b_sock, "vm", "verify", name, "--json")["ok"]
            raw = raw_bound(mg["bytes_sent"])
            total_s = mg["total_us"] / 1e6
            results.append({"guest_gib": gib, "dirty_rate_pages_s": rate, "state": r["state"],
                            "verify_ok": ok, "passes": mg["pass"], "bytes_sent": mg["bytes_sent"],
                            "total_s": round(total_s, 3), "downtime_ms": mg["downtime_us"] / 1e3,
                            "raw_bound_s": round(raw, 3),
                            "throughput_over_raw": round(raw / total_s, 3) if total_s else None})
            mv(a_sock, "vm", "rm", name)
            mv(b_sock, "vm", "rm", "--force", name)
    idle = [r["throughput_over_raw"] for r in results if r["dirty_rate_pages_s"] == 0]
    print(json.dumps({"bench": "migrate", "results": results,
                      "idle_throughput_over_raw_min": min(idle),
                      "targets": {"idle_throughput_over_raw": 0.8, "downtime_ms": 300}}))
finally:
    for p in (a, b):
        p.terminate()
        p.wait()
    subprocess.run(["pkill", "-9", "-f", "--", f"--ctl {tmp}/"])
    shutil.rmtree(tmp, ignore_errors=True)
