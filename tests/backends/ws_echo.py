#!/usr/bin/env python3
"""A real WebSocket backend for Portcullis tests (Debian's python3-websockets). TEST ONLY.

On connect it sends one JSON message describing the opening handshake it received (path and
headers), then echoes every text message back prefixed with "echo:".

Usage: ws_echo.py PORT     (prints READY once listening on 127.0.0.1:PORT)
"""
import asyncio
import json
import sys

import websockets


async def handler(ws, path=None):
    headers = getattr(ws, "request_headers", None)
    if headers is None:  # websockets >= 14
        headers = ws.request.headers
        path = ws.request.path
    await ws.send(json.dumps({
        "path": path if path is not None else ws.path,
        "headers": [[k.lower(), v] for k, v in headers.raw_items()],
    }))
    async for message in ws:
        await ws.send(f"echo:{message}")


async def main(port):
    async with websockets.serve(handler, "127.0.0.1", port):
        print("READY", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
