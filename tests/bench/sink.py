"""A bare HTTPS sink, the baseline of the large-document figure: ``python -m tests.bench.sink
CERT KEY OUT``. It takes one PUT at a time (Content-Length), writes the body to OUT in 1 MiB
chunks, answers 201 and prints its port first. No framework, no hashing: what Python's asyncio
and TLS alone cost on this machine."""

from __future__ import annotations

import asyncio
import ssl
import sys

CHUNK = 1024 * 1024


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, out: str) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            expect = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
                elif name.strip().lower() == b"expect":
                    expect = True
            if expect:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            with open(out, "wb") as fh:
                left = length
                while left:
                    data = await reader.read(min(CHUNK, left))
                    if not data:
                        return
                    fh.write(data)
                    left -= len(data)
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    cert, key, out = sys.argv[1:4]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await asyncio.start_server(lambda r, w: handle(r, w, out), "127.0.0.1", 0, ssl=context)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
