#!/usr/bin/env python3
"""A guest RAM range of a VMM, seen from outside (as root), for the guard's
move test. Region 0 only (guest address 0 = memfd offset 0).
  guestmem.py pfns PID NAME GPA LEN   {gpa: PFN} of the guest mapping, every VMA
                                      (fused pages map the fusion pool), from
                                      /proc/PID/pagemap; absent pages omitted
  guestmem.py same PID NAME GPA LEN   compares the memfd's bytes (through
                                      /proc/PID/map_files) with what the guest
                                      mapping shows (/proc/PID/mem): prints
                                      {"pages", "differ", "digest"} of the memfd"""
import hashlib, json, os, struct, sys

PS = 4096
mode, pid, name, gpa, length = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4], 0), int(sys.argv[5], 0)
base = vma = None
for line in open(f"/proc/{pid}/maps"):
    f = line.split()
    if len(f) >= 6 and f[5].startswith(f"/memfd:mv-{name}-ram0"):
        start = int(f[0].split("-")[0], 16)
        base, vma = start - int(f[2], 16), f[0]
        break
if base is None:
    sys.exit(f"no guest RAM mapping of {name} in pid {pid}")
n = length // PS
if mode == "pfns":
    with open(f"/proc/{pid}/pagemap", "rb") as pm:
        pm.seek((base + gpa) // PS * 8)
        data = pm.read(n * 8)
    out = {}
    for i, (e,) in enumerate(struct.iter_unpack("<Q", data)):
        if e >> 63 and e & ((1 << 55) - 1):
            out[gpa + i * PS] = e & ((1 << 55) - 1)
    json.dump(out, sys.stdout)
elif mode == "same":
    fd = os.open(f"/proc/{pid}/map_files/{vma}", os.O_RDONLY)
    memfd = os.pread(fd, length, gpa)
    os.close(fd)
    with open(f"/proc/{pid}/mem", "rb") as m:
        m.seek(base + gpa)
        mapped = m.read(length)
    differ = sum(memfd[i:i + PS] != mapped[i:i + PS] for i in range(0, length, PS))
    json.dump({"pages": n, "differ": differ, "digest": hashlib.sha256(memfd).hexdigest()}, sys.stdout)
else:
    sys.exit(f"unknown mode {mode}")
