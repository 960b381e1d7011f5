#!/usr/bin/env python3
"""A stand-in "legacy intranet app" for the Portcullis demo (standard library only).

It knows nothing about SSO: it trusts whatever X-Remote-User header reaches it, exactly like the
unmodified apps Portcullis is meant to protect. Each page shows what the app received, so you can
see the gateway's header hygiene at work (try sending X-Remote-User yourself: it never arrives).

Usage: legacy_app.py NAME PORT
"""
import html
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[1] if len(sys.argv) > 1 else "legacy"
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 8081


class Handler(BaseHTTPRequestHandler):
    server_version = "LegacyApp/1.0"

    def _respond(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        user = self.headers.get("X-Remote-User", "(nobody: no X-Remote-User header)")
        if "json" in (self.headers.get("Accept") or ""):
            payload = json.dumps({
                "app": NAME,
                "method": self.command,
                "path": self.path,
                "remote_user": self.headers.get("X-Remote-User"),
                "headers": dict(self.headers.items()),
                "body_bytes": len(body),
            }, indent=2).encode()
            ctype = "application/json"
        else:
            rows = "".join(
                f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                for k, v in self.headers.items()
            )
            payload = (
                f"<!doctype html><title>{html.escape(NAME)}</title>"
                f"<h1>{html.escape(NAME)}</h1>"
                f"<p>Signed-in user according to this app: <b>{html.escape(user)}</b></p>"
                f"<p>{html.escape(self.command)} {html.escape(self.path)}</p>"
                f"<h2>Headers this app received</h2><table border=1>{rows}</table>"
            ).encode()
            ctype = "text/html; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _respond

    def log_message(self, fmt, *args):
        sys.stderr.write(f"[{NAME}] {fmt % args}\n")


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
