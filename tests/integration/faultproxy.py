#!/usr/bin/env python3
"""A TCP proxy that injects one fault into the source->destination direction
of a migration stream: `cut` closes both sides after N bytes, `corrupt` flips
one bit of byte N. Usage: faultproxy.py LISTEN_PORT TARGET_PORT cut|corrupt N
Serves one connection, then exits."""
import socket, sys, threading

listen_port, target_port, mode, at = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", listen_port))
srv.listen(1)
print("ready", flush=True)
src, _ = srv.accept()
dst = socket.create_connection(("127.0.0.1", target_port))


def back():
    try:
        while (b := dst.recv(65536)):
            src.sendall(b)
    except OSError:
        pass


threading.Thread(target=back, daemon=True).start()
seen = 0
try:
    while (b := src.recv(65536)):
        if seen <= at < seen + len(b):
            if mode == "cut":
                dst.sendall(b[:at - seen])
                break
            b = bytearray(b)
            b[at - seen] ^= 0x10
            b = bytes(b)
        seen += len(b)
        dst.sendall(b)
except OSError:
    pass
for s in (src, dst):
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
