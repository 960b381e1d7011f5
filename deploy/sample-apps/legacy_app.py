#!/usr/bin/env python3
"""A stand-in "legacy intranet app" for the Portcullis demo (standard library only).

It knows nothing about SSO: it trusts whatever X-Remote-User header reaches it, exactly like the
unmodified apps Portcullis is meant to protect. Each page shows what the app received, so you can
see the gateway's header hygiene at work (try sending X-Remote-User yourself: it never arrives).

Usage: legacy_app.py NAME PORT [--trust-cookie COOKIE] [--basic USER:PASSWORD]

  --trust-cookie COOKIE   trust the user named in this cookie instead (e.g. REMOTE_USER), like
                          apps behind an old SSO agent
  --basic USER:PASSWORD   demand HTTP Basic with this account (401 otherwise), like apps with
                          web-server authentication
"""
import base64
import html
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[1] if len(sys.argv) > 1 else "legacy"
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 8081
OPTIONS = dict(zip(sys.argv[3::2], sys.argv[4::2]))
TRUST_COOKIE = OPTIONS.get("--trust-cookie")
BASIC = OPTIONS.get("--basic")


class Handler(BaseHTTPRequestHandler):
    server_version = "LegacyApp/1.0"

    def _cookie(self, name):
        for part in (self.headers.get("Cookie") or "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == name:
                return v
        return None

    def _respond(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if BASIC:
            want = "Basic " + base64.b64encode(BASIC.encode()).decode()
            if self.headers.get("Authorization") != want:
                self.send_response(401)
                self.send_header("WWW-Authenticate", f'Basic realm="{NAME}"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            user = BASIC.split(":", 1)[0] + " (HTTP Basic account)"
        elif TRUST_COOKIE:
            user = self._cookie(TRUST_COOKIE) or f"(nobody: no {TRUST_COOKIE} cookie)"
        else:
            user = self.headers.get("X-Remote-User", "(nobody: no X-Remote-User header)")
        if "json" in (self.headers.get("Accept") or ""):
            payload = json.dumps({
                "app": NAME,
                "method": self.command,
                "path": self.path,
                "remote_user": user,
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
