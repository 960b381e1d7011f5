#!/usr/bin/env python3
"""A stand-in legacy app that knows only its internal name (standard library only).

Like many old intranet apps, it was installed as http://intranet-host:8080 and writes that name
everywhere: redirects, cookies scoped to the internal domain, absolute links in its HTML, CSS and
JavaScript. Behind Portcullis the browser must never see that name (`[rewrite]` in the policy).

Usage: internal_name_app.py PORT INTERNAL_ORIGIN [--tls CERT KEY] [--client-ca CA] [--max-tls 1.2]

  INTERNAL_ORIGIN      the name the app believes it has, e.g. http://intranet-host:8080
  --tls CERT KEY       serve HTTPS
  --client-ca CA       demand a client certificate issued by CA (mutual TLS), and show its subject
  --max-tls 1.2        speak no TLS version newer than 1.2 (an old backend)

Pages:
  /                    HTML with absolute internal links (and a link to a page elsewhere)
  /go                  302 to the internal name; /refresh answers with a Refresh header
  /login               sets a session cookie with Domain=<internal host> and Path=/
  /style.css, /app.js  absolute internal URLs in CSS and in JavaScript (also JSON-escaped)
  /gz                  the HTML page gzip-compressed, whatever the request asked for
  /big                 a page of ~200 KiB with an internal link every 100 bytes, in small chunks
  /health              "ok" (200), for health checks; /health/fail answers 503
  /whoami              JSON: the identity headers and client certificate the app received
"""
import gzip
import json
import ssl
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
ORIGIN = sys.argv[2].rstrip("/")
ARGS = sys.argv[3:]
HOST = urllib.parse.urlsplit(ORIGIN).hostname


def option(name, count=1):
    if name not in ARGS:
        return None
    at = ARGS.index(name)
    return ARGS[at + 1 : at + 1 + count]


PAGE = f"""<!doctype html>
<html><head><title>Intranet app</title>
<link rel="stylesheet" href="{ORIGIN}/style.css"><script src="{ORIGIN}/app.js"></script></head>
<body><h1>Intranet app</h1>
<p><a id="home" href="{ORIGIN}/">Home</a> <a id="report" href="{ORIGIN}/reports/q3?x=1">Q3 report</a>
<a id="elsewhere" href="https://www.example.org/">Elsewhere</a></p>
<form action="{ORIGIN}/search" method="get"><input name="q"></form>
</body></html>
"""
CSS = f"body {{ background: url({ORIGIN}/bg.png) }}\n"
JS = (
    f'var API = "{ORIGIN}/api";\n'
    f'var CONFIG = {json.dumps({"base": ORIGIN + "/"})};\n'
    f'var ESCAPED = "{ORIGIN.replace("/", chr(92) + "/")}\\/api";\n'
)


class Handler(BaseHTTPRequestHandler):
    server_version = "IntranetApp/1.0"
    protocol_version = "HTTP/1.1"

    def _send(self, status, body, ctype="text/html; charset=utf-8", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/go":
            return self._send(302, b"", headers=[("Location", f"{ORIGIN}/landing?from=go")])
        if path == "/refresh":
            return self._send(200, b"wait", headers=[("Refresh", f"0; url={ORIGIN}/landing")])
        if path == "/login":
            return self._send(
                200,
                b"signed in",
                headers=[
                    ("Set-Cookie", f"APPSESSION=s3cr3t; Domain={HOST}; Path=/; HttpOnly"),
                    ("Set-Cookie", "THEME=dark; Path=/"),
                ],
            )
        if path == "/style.css":
            return self._send(200, CSS.encode(), "text/css")
        if path == "/app.js":
            return self._send(200, JS.encode(), "application/javascript")
        if path == "/gz":
            return self._send(200, gzip.compress(PAGE.encode()), headers=[("Content-Encoding", "gzip")])
        if path == "/big":
            line = f'<a href="{ORIGIN}/x">x</a>'.ljust(99) + "\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(2000):
                chunk = line.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            return None
        if path == "/health":
            return self._send(200, b"ok", "text/plain")
        if path == "/health/fail":
            return self._send(503, b"failing", "text/plain")
        if path == "/whoami":
            cert = self.connection.getpeercert() if hasattr(self.connection, "getpeercert") else None
            subject = None
            if cert:
                subject = ",".join("=".join(kv) for rdn in cert.get("subject", ()) for kv in rdn)
            body = json.dumps({
                "port": PORT,
                "host": self.headers.get("Host"),
                "groups": self.headers.get("X-Groups"),
                "primary_group": self.headers.get("X-Primary-Group"),
                "group_count": self.headers.get("X-Group-Count"),
                "remote_user": self.headers.get("X-Remote-User"),
                "client_certificate": subject,
                "tls": isinstance(self.connection, ssl.SSLSocket),
                "tls_version": self.connection.version() if isinstance(self.connection, ssl.SSLSocket) else None,
            }).encode()
            return self._send(200, body, "application/json")
        return self._send(200, PAGE.encode())

    do_HEAD = do_GET

    def log_message(self, fmt, *args):
        sys.stderr.write(f"[internal-name-app] {fmt % args}\n")


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    tls = option("--tls", 2)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls[0], tls[1])
        client_ca = option("--client-ca")
        if client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(client_ca[0])
        if option("--max-tls") == ["1.2"]:
            context.maximum_version = ssl.TLSVersion.TLSv1_2
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()
