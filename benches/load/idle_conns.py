#!/usr/bin/env python3
"""Open N keep-alive client connections to a proxy, send one request on
each (so each is a real, served keep-alive connection), then hold them
idle. Writes READY_FILE once all are open, and exits when stdin closes or
after HOLD seconds.

usage: idle_conns.py HOST:PORT N READY_FILE [HOLD]
"""
import socket
import sys
import time


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    n, ready, hold = int(sys.argv[2]), sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
    conns, failed = [], 0
    for i in range(n):
        try:
            s = socket.create_connection((host, int(port)), timeout=5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nX-User-ID: idle-{i}\r\n\r\n".encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    raise ConnectionError("closed")
                buf += chunk
            head, _, body = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                body += s.recv(4096)
            conns.append(s)
        except OSError:
            failed += 1
    with open(ready, "w") as f:
        f.write(f"open={len(conns)} failed={failed}\n")
    deadline = time.time() + hold
    while time.time() < deadline:
        time.sleep(0.2)
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
