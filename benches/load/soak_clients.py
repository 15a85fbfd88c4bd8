#!/usr/bin/env python3
"""The mixed clients of scripts/soak.sh, for SECONDS against a proxy:

- pipelined: connections that each write DEPTH GET requests in one go and
  read DEPTH responses, again and again (keep-alive);
- chunked: POSTs with a chunked body of several chunks, each on a
  keep-alive connection, answered 200;
- websocket: connections upgraded on /ws that send text messages and
  check the echo, then close properly and start again;
- slowloris: connections that send part of a head and drip a byte a
  second; the proxy's header_read_timeout closes them, and they reconnect
  (not failures: that is the expected outcome).

Every failure (a wrong status, a short or wrong answer, a reset, a
timeout) is counted and the first few are printed. At the end one line:
`pipelined=N chunked=N websocket=N slowloris_closed=N failures=N`.

usage: soak_clients.py HOST:PORT SECONDS [PIPELINED CHUNKED WEBSOCKET SLOWLORIS]
"""
import asyncio
import base64
import hashlib
import os
import sys
import time

TIMEOUT = 10.0  # an answer slower than this is a failure
counts = {"pipelined": 0, "chunked": 0, "websocket": 0, "slowloris_closed": 0, "failures": 0}
printed = 0


def fail(kind, what):
    global printed
    counts["failures"] += 1
    if printed < 20:
        printed += 1
        print(f"FAIL {kind}: {what}", file=sys.stderr, flush=True)


async def read_response(reader):
    """One HTTP/1.1 response (Content-Length or chunked body): (status, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    if status in (101, 204, 304):
        return status, fields, b""
    if "content-length" in fields:
        return status, fields, await reader.readexactly(int(fields["content-length"]))
    if fields.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return status, fields, body
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return status, fields, await reader.read()


async def pipelined(host, port, deadline, n, depth=8):
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            for _ in range(100):  # 800 requests: under any keepalive_requests-style limit
                if time.monotonic() >= deadline:
                    break
                writer.write(b"".join(
                    f"GET /pipe/{i} HTTP/1.1\r\nHost: soak\r\nX-User-ID: pipe-{n}-{i}\r\n\r\n".encode()
                    for i in range(depth)))
                for _ in range(depth):
                    status, _, body = await asyncio.wait_for(read_response(reader), TIMEOUT)
                    if status != 200 or not body.startswith(b"hello from"):
                        fail("pipelined", f"status {status} body {body[:40]!r}")
                    else:
                        counts["pipelined"] += 1
                await asyncio.sleep(0.01)
            writer.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
            fail("pipelined", repr(e))
            await asyncio.sleep(0.1)


async def chunked(host, port, deadline, n):
    payload = [os.urandom(1000).hex().encode() for _ in range(4)]
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            for i in range(100):
                if time.monotonic() >= deadline:
                    break
                writer.write(f"POST /upload HTTP/1.1\r\nHost: soak\r\nX-User-ID: up-{n}-{i}\r\n"
                             "Transfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n".encode())
                for part in payload:  # in separate writes, a little apart
                    writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.002)
                writer.write(b"0\r\n\r\n")
                status, _, body = await asyncio.wait_for(read_response(reader), TIMEOUT)
                if status != 200 or body.strip() != str(sum(map(len, payload))).encode():
                    fail("chunked", f"status {status} body {body[:40]!r}")
                else:
                    counts["chunked"] += 1
                await asyncio.sleep(0.02)
            writer.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
            fail("chunked", repr(e))
            await asyncio.sleep(0.1)


def ws_frame(payload: bytes) -> bytes:
    """A masked text frame (clients must mask)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def ws_read(reader):
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return b0 & 0x0F, await reader.readexactly(n)


async def websocket(host, port, deadline, n):
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(f"GET /ws HTTP/1.1\r\nHost: soak\r\nX-User-ID: ws-{n}\r\nConnection: Upgrade\r\n"
                         f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n".encode())
            status, fields, _ = await asyncio.wait_for(read_response(reader), TIMEOUT)
            accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            if status != 101 or fields.get("sec-websocket-accept", "").encode() != accept:
                fail("websocket", f"handshake status {status}")
                writer.close()
                await asyncio.sleep(0.5)
                continue
            for i in range(50):
                if time.monotonic() >= deadline:
                    break
                message = f"message {n}-{i} {os.urandom(8).hex()}".encode()
                writer.write(ws_frame(message))
                opcode, echoed = await asyncio.wait_for(ws_read(reader), TIMEOUT)
                if opcode != 1 or echoed != message:
                    fail("websocket", f"echo opcode {opcode} {echoed[:40]!r}")
                    break
                counts["websocket"] += 1
                await asyncio.sleep(0.05)
            # A close frame, and the server's close back.
            mask = os.urandom(4)
            writer.write(bytes([0x88, 0x82]) + mask + bytes(b ^ mask[i] for i, b in enumerate(b"\x03\xe8")))
            opcode, _ = await asyncio.wait_for(ws_read(reader), TIMEOUT)
            if opcode != 8:
                fail("websocket", f"close answered with opcode {opcode}")
            writer.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
            fail("websocket", repr(e))
            await asyncio.sleep(0.1)


async def slowloris(host, port, deadline, n):
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET /slow HTTP/1.1\r\nHost: soak\r\nX-Drip-{n}: ".encode())
            while time.monotonic() < deadline:
                await asyncio.sleep(1)
                writer.write(b"a")
                await writer.drain()
                if reader.at_eof():
                    break
                # The proxy answers 408 (or just closes) when its header
                # read timeout fires; either way the connection ends.
                try:
                    data = await asyncio.wait_for(reader.read(4096), 0.01)
                    if data == b"" or data.startswith(b"HTTP/1.1 408"):
                        break
                except asyncio.TimeoutError:
                    pass
            counts["slowloris_closed"] += 1
            writer.close()
        except OSError:
            counts["slowloris_closed"] += 1  # reset by the proxy on close: expected
            await asyncio.sleep(0.1)


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    seconds = float(sys.argv[2])
    n_pipe, n_chunk, n_ws, n_slow = (int(x) for x in (sys.argv[3:7] or [4, 4, 8, 100]))
    deadline = time.monotonic() + seconds
    tasks = [pipelined(host, port, deadline, i) for i in range(n_pipe)]
    tasks += [chunked(host, port, deadline, i) for i in range(n_chunk)]
    tasks += [websocket(host, port, deadline, i) for i in range(n_ws)]
    tasks += [slowloris(host, port, deadline, i) for i in range(n_slow)]
    await asyncio.gather(*tasks)
    print(" ".join(f"{k}={v}" for k, v in counts.items()), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
