#!/usr/bin/env python3
"""bench/migrate: live migration between two daemons on loopback for 1, 4 and
8 GiB guests running memtouch (working set = half the guest): total time,
downtime and bytes sent, against anchors measured in the same run.

Anchors (both push the same number of bytes through a loopback TCP socket):
- raw bound: the receiver recv()s into one reused buffer, nothing else. The
  target is idle-guest throughput >= 0.8x this.
- memory bound (informative): the same bytes sent from guest-like memory
  (the guest's page kind, populated beforehand) into fresh memory of that
  kind, landed the way the destination lands them, and nothing else: the
  cost of reading guest RAM and allocating (hugetlb: zeroing) the
  destination's, which the raw bound never pays. Its ratio to the raw
  bound is what this host allows a migration at best.
Anchors run while no guest runs (the migrated VM is paused first), right
after the migration they are compared with.

Rows: an idle guest (paused, half resident) migrated back and forth REPS
times (medians), on 4 KiB guest RAM and again (as root, unless --no-hugetlb)
on a warm hugetlb pool the bench reserves for the run and gives back after;
then guests (4 KiB RAM) dirtying memory at 1/8, 1/4 and 1/2 of the link rate, the link rate being the raw bound measured at the start in pages/s
(measured_dirty_rate is the guest's rate over the last pass as the migration
saw it: after any auto-converge throttling, which ends with the migration).
The JSON names the pages guest RAM runs on (guest_ram_pages: hugetlb, thp or
4k, from the daemon; shmem_thp: the host's sysfs setting): a destination's
allocation costs several times more on 4k. Idle rows also give the CPU
seconds each side's processes spent (cpu_s_source, cpu_s_destination): with
one core per side, the side near total_s is the one that limits. Usage: migrate.py BUILD_DIR [--quick] [--no-hugetlb]"""
import json, mmap, os, queue, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

build = os.path.abspath(sys.argv[1])
quick = "--quick" in sys.argv
sizes = [1] if quick else [1, 4, 8]
fractions = [0.5] if quick else [0.125, 0.25, 0.5]   # of the link rate
reps = 3                                             # idle migrations per size
tmp = tempfile.mkdtemp(prefix="mvbench.")
cli = f"{build}/src/cli/memvisor"
PAGE = 4096


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def daemon(name, port):
    sock = f"{tmp}/{name}.sock"
    p = subprocess.Popen([f"{build}/src/daemon/memvisord", "--socket", sock, "--state-dir",
                          f"{tmp}/{name}", "--mem-capacity", "20G",
                          "--migrate-listen", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    return p, sock


def mv(sock, *args):
    out = subprocess.run([cli, *args], env=dict(os.environ, MEMVISOR_SOCKET=sock), check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out) if "--json" in args else out


def guest_like(nbytes, backing):
    """A mapping of nbytes of guest-like memory: 4 KiB shmem (a memfd) or
    hugetlb; returns (fd, mmap)."""
    huge = backing == "hugetlb"
    size = (nbytes + (2 << 20) - 1) & ~((2 << 20) - 1) if huge else nbytes
    fd = os.memfd_create("bound", os.MFD_HUGETLB if huge else 0)
    os.ftruncate(fd, size)
    return fd, mmap.mmap(fd, size)


kept_sources = {}   # backing -> (fd, mmap): the memory bound's long-lived source


def anchor_source(nbytes, backing):
    """Populated guest-like memory to send the memory bound from. 4 KiB
    memory is made once, at the start, and kept: on a VM host fresh memory
    costs a hypervisor fault per page the first time, which a guest that has
    been running for a while has long paid (hugetlb pool pages are warm)."""
    if backing in kept_sources and len(kept_sources[backing][1]) >= nbytes:
        return kept_sources[backing], False
    fd, m = guest_like(nbytes, backing)
    for i in range(0, len(m), PAGE):
        m[i] = 0x5a
    if backing == "4k":
        kept_sources[backing] = (fd, m)
    return (fd, m), backing != "4k"


def push(nbytes, backing=None):
    """Seconds to push nbytes through loopback TCP. Without backing, the
    raw bound: a hot 4 MiB buffer sent over and over, and recv()d into one
    reused buffer. With backing (4k or hugetlb), the memory bound: the same
    bytes sent from guest-like memory populated beforehand (cold, as a
    paused guest's RAM is: see anchor_source) into fresh memory of the same kind, the way the
    destination lands them (4k: pwrite into a memfd, which allocates without
    zeroing; hugetlb: recv straight into the mapping, one zeroing fault per
    2 MiB); no checksum, no parsing. What moving these bytes between guest
    memories costs on this host before any migration processing."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    chunk = 4 << 20

    def sink():
        c, _ = srv.accept()
        off = 0
        if backing == "hugetlb":
            fd, m = guest_like(nbytes, backing)
            dst = memoryview(m)
            while (n := c.recv_into(dst[off:off + chunk])):
                off += n
            dst.release()
            m.close()
            os.close(fd)
        elif backing:
            # Receive into one buffer while a writer thread puts the other
            # into the memfd, as the destination's applier does.
            fd = os.memfd_create("bound")
            free, full = queue.Queue(), queue.Queue()
            for _ in range(2):
                free.put(memoryview(bytearray(chunk)))

            def writer():
                while (item := full.get()) is not None:
                    b, n, at = item
                    os.pwrite(fd, b[:n], at)
                    free.put(b)

            w = threading.Thread(target=writer)
            w.start()
            while True:
                b = free.get()
                n = c.recv_into(b)
                if not n:
                    break
                full.put((b, n, off))
                off += n
            full.put(None)
            w.join()
            os.close(fd)
        else:
            buf = bytearray(chunk)   # recv_into: no allocation, just the kernel copy
            while c.recv_into(buf):
                pass
        c.close()

    src = None
    if backing:
        (fd, m), temporary = anchor_source(nbytes, backing)
        src = (fd, m, memoryview(m), temporary)
    t = threading.Thread(target=sink)
    t.start()
    c = socket.create_connection(srv.getsockname())
    hot = memoryview(b"\x5a" * chunk)
    t0 = time.perf_counter()
    off = 0
    while off < nbytes:
        n = min(chunk, nbytes - off)
        c.sendall(src[2][off:off + n] if src else hot[:n])
        off += n
    c.close()
    t.join()
    dt = time.perf_counter() - t0
    srv.close()
    if src:
        src[2].release()
        if src[3]:
            src[1].close()
            os.close(src[0])
    return dt


def raw_bound(nbytes):
    return statistics.median(push(nbytes, False) for _ in range(3))


def wait_resident(sock, name, nbytes):
    while mv(sock, "vm", "show", name, "--json")["stats"]["resident_bytes"] < nbytes:
        time.sleep(0.2)


pa, pb = free_port(), free_port()
a, a_sock = daemon("a", pa)
b, b_sock = daemon("b", pb)
side = {a_sock: pa, b_sock: pb}
results = []
load0 = list(os.getloadavg())   # other users of the machine show up here


def sysfs_choice(path):
    try:
        return open(path).read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return None


# What guest RAM (and so the destination's allocation) runs on: hugetlb,
# thp or 4k, as the daemon reports it, and the host setting behind it.
guest_ram_pages = mv(a_sock, "host", "--json")["guest_ram_pages"]
shmem_thp = sysfs_choice("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
HUGETLB_POOL = "/proc/sys/vm/nr_hugepages"


def set_pool(pages):
    """Pages still reserved when the pool shrank stay behind as free surplus
    pages until the count moves again: move it up by that many and back."""
    with open(HUGETLB_POOL, "w") as f:
        f.write(str(pages))
    surp = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("HugePages_Surp"))
    if surp:
        for n in (pages + surp, pages):
            with open(HUGETLB_POOL, "w") as f:
                f.write(str(n))


def warm_pool(pages):
    """Reserve a hugetlb pool of `pages` 2 MiB pages and touch each once: the
    first fault of a pool page can be a cold hypervisor fault-in (free page
    reporting), which a VM host pays once at boot, not per migration."""
    set_pool(pages)
    got = int(open(HUGETLB_POOL).read())
    fd = os.memfd_create("warm", os.MFD_HUGETLB)
    try:
        os.ftruncate(fd, got << 21)
        with mmap.mmap(fd, got << 21) as m:
            for i in range(got):
                m[i << 21] = 1
    finally:
        os.close(fd)
    return got


class CpuBySide:
    """CPU seconds the processes of each side (daemon and VMMs, found by the
    side's state dir in their command line) spend while it runs: sampled at
    20 Hz, so a source VMM that exits at the end still counts. Where an idle
    migration's time goes: the source or the destination."""

    def __init__(self):
        self.hz = os.sysconf("SC_CLK_TCK")
        self.first, self.last, self.stop, self.started = {}, {}, False, None

    def sample(self):
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read()
                for side in ("a", "b"):
                    if f"{tmp}/{side}".encode() in cmd:
                        st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                        cpu = (int(st[11]) + int(st[12])) / self.hz
                        # a process born during the migration counts from 0
                        self.first.setdefault(pid, cpu if self.started is None else 0.0)
                        self.last[pid] = (side, cpu)
            except (OSError, IndexError, ValueError):
                continue

    def __enter__(self):
        self.sample()
        self.started = time.monotonic()
        self.t = threading.Thread(target=self.run)
        self.t.start()
        return self

    def run(self):
        while not self.stop:
            self.sample()
            time.sleep(0.05)

    def __exit__(self, *exc):
        self.stop = True
        self.t.join()
        self.sample()
        out = {"a": 0.0, "b": 0.0}
        for pid, (side, cpu) in self.last.items():
            out[side] += cpu - self.first[pid]
        self.cpu = out


def idle_row(gib, backing):
    """An idle guest (paused, half resident) migrated back and forth."""
    name = f"idle{gib}{backing}"
    mv(a_sock, "vm", "create", name, "--memory", f"{gib}G", "--backing", backing, "--workload",
       "memtouch", "--wss", f"{gib * 512}M", "--pattern", "seq", "--rate", "400000")
    wait_resident(a_sock, name, gib << 29)
    mv(a_sock, "vm", "pause", name)
    cur, other = a_sock, b_sock
    runs = []
    for _ in range(reps):
        with CpuBySide() as cpu:
            r = mv(cur, "vm", "migrate", name, "--to", f"127.0.0.1:{side[other]}", "--json")
        mg = r["migration"]
        src, dst = ("a", "b") if cur == a_sock else ("b", "a")
        ok = mv(other, "vm", "verify", name, "--json")["ok"]
        mv(other, "vm", "pause", name)   # it runs on arrival; nothing runs during the anchors
        mv(cur, "vm", "rm", name)        # the source's record: its memory goes back first
        raw = raw_bound(mg["bytes_sent"])
        membound = push(mg["bytes_sent"], backing)
        runs.append({"state": r["state"], "verify_ok": ok, "bytes_sent": mg["bytes_sent"],
                     "total_s": mg["total_us"] / 1e6, "downtime_ms": mg["downtime_us"] / 1e3,
                     "raw_bound_s": raw, "memory_bound_s": membound,
                     "cpu_s_source": cpu.cpu[src], "cpu_s_destination": cpu.cpu[dst]})
        cur, other = other, cur
    mv(cur, "vm", "rm", "--force", name)
    tot = statistics.median(x["total_s"] for x in runs)
    raw = statistics.median(x["raw_bound_s"] for x in runs)
    membound = statistics.median(x["memory_bound_s"] for x in runs)
    return {"guest_gib": gib, "backing": backing, "dirty_rate_pages_s": 0, "runs": len(runs),
            "state": runs[-1]["state"], "verify_ok": all(x["verify_ok"] for x in runs),
            "passes": 1, "bytes_sent": runs[-1]["bytes_sent"], "total_s": round(tot, 3),
            "total_s_all": [round(x["total_s"], 3) for x in runs],
            "downtime_ms": statistics.median(x["downtime_ms"] for x in runs),
            "raw_bound_s": round(raw, 3),
            "raw_bound_s_all": [round(x["raw_bound_s"], 3) for x in runs],
            "memory_bound_s": round(membound, 3),
            "memory_bound_s_all": [round(x["memory_bound_s"], 3) for x in runs],
            "throughput_over_raw": round(raw / tot, 3),
            "cpu_s_source": round(statistics.median(x["cpu_s_source"] for x in runs), 2),
            "cpu_s_destination": round(statistics.median(x["cpu_s_destination"] for x in runs), 2),
            "throughput_over_memory_bound": round(membound / tot, 3),
            "memory_bound_over_raw": round(raw / membound, 3)}


pool0 = int(open(HUGETLB_POOL).read())
try:
    anchor_source(max(sizes) * (520 << 20), "4k")   # bytes_sent of the largest idle row, and some
    link_s = raw_bound(256 << 20)
    link_pages = int((256 << 20) / link_s / PAGE)
    for gib in sizes:
        results.append(idle_row(gib, "4k"))
        # Dirtying guests at fractions of the link.
        for frac in fractions:
            rate = int(link_pages * frac)
            name = f"g{gib}f{frac}"
            mv(a_sock, "vm", "create", name, "--memory", f"{gib}G", "--backing", "4k",
               "--workload", "memtouch", "--wss", f"{gib * 512}M", "--pattern", "random", "--rate", str(rate))
            # Random writes cover the working set only asymptotically (the
            # last pages take N ln N / rate): 99% is resident enough.
            wait_resident(a_sock, name, (gib << 29) * 99 // 100)
            r = mv(a_sock, "vm", "migrate", name, "--to", f"127.0.0.1:{pb}", "--json")
            mg = r["migration"]
            ok = mv(b_sock, "vm", "verify", name, "--json")["ok"]
            mv(b_sock, "vm", "pause", name)
            raw = raw_bound(mg["bytes_sent"])
            total_s = mg["total_us"] / 1e6
            results.append({"guest_gib": gib, "backing": "4k", "dirty_rate_pages_s": rate, "link_fraction": frac,
                            "measured_dirty_rate_pages_s": mg["dirty_rate"],
                            "state": r["state"],
                            "verify_ok": ok, "passes": mg["pass"], "bytes_sent": mg["bytes_sent"],
                            "total_s": round(total_s, 3), "downtime_ms": mg["downtime_us"] / 1e3,
                            "raw_bound_s": round(raw, 3),
                            "throughput_over_raw": round(raw / total_s, 3) if total_s else None})
            mv(a_sock, "vm", "rm", name)
            mv(b_sock, "vm", "rm", "--force", name)
    # The same idle guests on a warm hugetlb pool (source and destination
    # each hold the whole guest): 2 MiB allocation and direct receive.
    for fd, m in kept_sources.values():   # its memory is the pool's now
        m.close()
        os.close(fd)
    kept_sources.clear()
    hugetlb = None
    if os.geteuid() == 0 and "--no-hugetlb" not in sys.argv:
        need = 2 * max(sizes) * 512 + 32   # the guest twice, or once and the memory bound's two halves
        if warm_pool(pool0 + need) >= pool0 + need:
            hugetlb = []
            for gib in sizes:
                hugetlb.append(idle_row(gib, "hugetlb"))
            results.extend(hugetlb)
    idle = [r["throughput_over_raw"] for r in results if r["dirty_rate_pages_s"] == 0
            and r["backing"] == "4k"]
    idle_huge = [r["throughput_over_raw"] for r in hugetlb] if hugetlb else None
    dirty = [r["downtime_ms"] for r in results if r["dirty_rate_pages_s"]]
    print(json.dumps({"bench": "migrate", "guest_ram_pages": guest_ram_pages,
                      "shmem_thp": shmem_thp, "loadavg_start": load0,
                      "loadavg_end": list(os.getloadavg()), "link_pages_s": link_pages,
                      "link_bytes_s": int((256 << 20) / link_s), "results": results,
                      "idle_throughput_over_raw_min": {"4k": min(idle),
                                                       "hugetlb": min(idle_huge) if idle_huge else None},
                      "downtime_ms_max_up_to_half_link": max(dirty),
                      "targets": {"idle_throughput_over_raw": 0.8, "downtime_ms": 300},
                      "met": {"idle_throughput_over_raw_4k": min(idle) >= 0.8,
                              "idle_throughput_over_raw_hugetlb":
                                  min(idle_huge) >= 0.8 if idle_huge else None,
                              "downtime_ms": max(dirty) <= 300}}))
finally:
    for p in (a, b):
        p.terminate()
        p.wait()
    subprocess.run(["pkill", "-9", "-f", "--", f"--ctl {tmp}/"])
    time.sleep(0.3)
    set_pool(pool0)
    shutil.rmtree(tmp, ignore_errors=True)
