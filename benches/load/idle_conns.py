#!/usr/bin/env python3
"""Open N keep-alive client connections to a proxy, send one request on
each (so each is a real, served keep-alive connection), then hold them
idle. Writes READY_FILE once all are open, and exits after HOLD seconds.
With --tls, each connection is TLS first (no certificate check, no ALPN:
HTTP/1.1), as a browser's idle keep-alive connection to an https site.

usage: idle_conns.py [--tls] HOST:PORT N READY_FILE [HOLD]
"""
import socket
import ssl
import sys
import time


def main():
    args = sys.argv[1:]
    tls = None
    if args and args[0] == "--tls":
        args = args[1:]
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    host, port = args[0].rsplit(":", 1)
    n, ready, hold = int(args[1]), args[2], float(args[3]) if len(args) > 3 else 60.0
    conns, failed = [], 0
    for i in range(n):
        try:
            s = socket.create_connection((host, int(port)), timeout=5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                s = tls.wrap_socket(s, server_hostname="localhost")
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
