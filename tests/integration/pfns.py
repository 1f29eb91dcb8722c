#!/usr/bin/env python3
"""Prints {"<inode>:<file offset>": PFN} for every present page of a VMM's
guest RAM (the memfd mappings named mv-NAME-ramN), read from /proc/PID/pagemap as
root. Used to prove a hand-over maps the very same physical frames."""
import json, struct, sys

pid, name = sys.argv[1], sys.argv[2]
out = {}
with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pm:
    for line in maps:
        f = line.split()
        if len(f) < 6 or not f[5].startswith(f"/memfd:mv-{name}-ram"):
            continue
        start, end = (int(x, 16) for x in f[0].split("-"))
        off, inode = int(f[2], 16), f[4]
        n = (end - start) // 4096
        pm.seek(start // 4096 * 8)
        data = pm.read(n * 8)
        for i, (e,) in enumerate(struct.iter_unpack("<Q", data)):
            if e >> 63 and e & ((1 << 55) - 1):
                out[f"{inode}:{off + i * 4096}"] = e & ((1 << 55) - 1)
json.dump(out, sys.stdout)
