#!/usr/bin/env python3
"""The slow-path upstream of scripts/soak.sh, behind the soak's nginx
upstreams (which answer everything else themselves):

- POST /upload: reads the body (Content-Length or chunked) and answers
  200 with its length in bytes;
- GET /ws with a WebSocket upgrade: 101, then echoes every text frame
  (unmasked, as a server sends), answers a close frame with a close frame.

usage: soak_upstream.py PORT
"""
import asyncio
import base64
import hashlib
import sys

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    fields = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    return method, target, fields


async def read_body(reader, fields):
    if fields.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return body
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return await reader.readexactly(int(fields.get("content-length", "0")))


async def websocket(reader, writer):
    while True:
        b0, b1 = await reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await reader.readexactly(8), "big")
        mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(n)))
        opcode = b0 & 0x0F
        head = bytes([0x80 | opcode, len(payload)]) if len(payload) < 126 else \
            bytes([0x80 | opcode, 126]) + len(payload).to_bytes(2, "big")
        writer.write(head + payload)
        await writer.drain()
        if opcode == 8:
            return


async def serve(reader, writer):
    try:
        while True:
            method, target, fields = await read_head(reader)
            if fields.get("upgrade", "").lower() == "websocket":
                accept = base64.b64encode(hashlib.sha1((fields["sec-websocket-key"] + GUID).encode()).digest()).decode()
                writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
                await writer.drain()
                await websocket(reader, writer)
                return
            body = await read_body(reader, fields)
            answer = f"{len(body)}\n".encode() if method == "POST" else b"hello from soak upstream\n"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(answer) + answer)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, KeyError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
