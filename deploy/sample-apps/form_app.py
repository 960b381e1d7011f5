#!/usr/bin/env python3
"""A stand-in legacy app with its OWN login form, for Portcullis form-fill (standard library only).

It knows nothing about SSO: /login shows a form with a CSRF token, a correct user name and
password set a session cookie (APPSESSION), every other page needs that cookie (else a redirect
to /login), /logout ends the session. Sessions live in memory, so restarting the app logs
everyone out (the gateway must then log in again by itself); pages under /soft/ answer a
logged-out visitor with a 200 "session has expired" notice instead of a redirect, as some apps
do. GET /_stats tells how many logins
succeeded and failed, so tests can count them.

Usage: form_app.py NAME PORT USERS_JSON [--tls CERT KEY]
  (USERS_JSON: {"asmith": "Winter2026!", ...}, a path; --tls serves HTTPS with that PEM
  certificate and key, like a backend behind a private CA)
"""
import html
import json
import secrets
import ssl
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[1] if len(sys.argv) > 1 else "forms"
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 8085
USERS_FILE = sys.argv[3] if len(sys.argv) > 3 and not sys.argv[3].startswith("--") else None
TLS = sys.argv[sys.argv.index("--tls") + 1:sys.argv.index("--tls") + 3] if "--tls" in sys.argv else None

lock = threading.Lock()
sessions = {}      # session id -> user name
csrf_tokens = set()
stats = {"logins": 0, "failed_logins": 0}


def users():
    # Read on every login, so a test (or an admin) can change a password while the app runs.
    if not USERS_FILE:
        return {"asmith": "Winter2026!"}
    with open(USERS_FILE, encoding="utf-8") as f:
        return json.load(f)


class Handler(BaseHTTPRequestHandler):
    server_version = "FormApp/1.0"

    def _cookie(self, name):
        for part in (self.headers.get("Cookie") or "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == name:
                return v
        return None

    def _send(self, status, body=b"", ctype="text/html; charset=utf-8", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _login_page(self, error=""):
        token = secrets.token_urlsafe(16)
        with lock:
            csrf_tokens.add(token)
        err = f"<p class=error>{html.escape(error)}</p>" if error else ""
        page = (
            f"<!doctype html><title>{NAME} sign in</title><h1>Please sign in to {NAME}</h1>{err}"
            f"<form method=post action=/login><input type=hidden name=csrf_token value=\"{token}\">"
            "<input name=user><input name=pass type=password><button>Sign in</button></form>"
        ).encode()
        self._send(200, page)

    def do_GET(self):
        path = urllib.parse.urlparse(self.path).path
        if path == "/_stats":
            with lock:
                body = json.dumps(stats).encode()
            return self._send(200, body, "application/json")
        if path == "/login":
            return self._login_page()
        sid = self._cookie("APPSESSION")
        with lock:
            user = sessions.get(sid) if sid else None
        if path == "/logout":
            with lock:
                sessions.pop(sid, None)
            return self._send(302, headers=[("Location", "/login"), ("Set-Cookie", "APPSESSION=; Max-Age=0; Path=/")])
        if not user and path.startswith("/soft/"):
            # Some apps answer 200 with a notice instead of redirecting to their login page.
            return self._send(200, b"<!doctype html><p>Your session has expired. Please sign in again.</p>")
        if not user:
            return self._send(302, headers=[("Location", "/login")])
        if "json" in (self.headers.get("Accept") or ""):
            body = json.dumps({"app": NAME, "user": user, "path": self.path,
                               "headers": dict(self.headers.items())}).encode()
            return self._send(200, body, "application/json")
        page = (f"<!doctype html><title>{NAME}</title><h1>{NAME}</h1>"
                f"<p>Welcome back, <b>{html.escape(user)}</b> (signed in with this app's own form).</p>"
                f"<p>{html.escape(self.path)}</p><p><a href=/logout>Sign out</a></p>").encode()
        return self._send(200, page)

    do_HEAD = do_GET

    def do_POST(self):
        path = urllib.parse.urlparse(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        if path != "/login":
            return self.do_GET()
        field = lambda k: (form.get(k) or [""])[0]
        with lock:
            token_ok = field("csrf_token") in csrf_tokens
            csrf_tokens.discard(field("csrf_token"))
        if not token_ok:
            with lock:
                stats["failed_logins"] += 1
            return self._login_page("Your form expired (CSRF token missing or used).")
        user = field("user")
        if users().get(user) != field("pass") or not user:
            with lock:
                stats["failed_logins"] += 1
            return self._login_page("Wrong user name or password.")
        sid = secrets.token_urlsafe(24)
        with lock:
            sessions[sid] = user
            stats["logins"] += 1
        return self._send(302, headers=[("Location", "/"), ("Set-Cookie", f"APPSESSION={sid}; Path=/; HttpOnly")])

    def log_message(self, fmt, *args):
        sys.stderr.write(f"[{NAME}] {fmt % args}\n")


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    if TLS:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(TLS[0], TLS[1])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    scheme = "https" if TLS else "http"
    print(f"{NAME} listening on {scheme}://127.0.0.1:{PORT}", flush=True)
    server.serve_forever()
