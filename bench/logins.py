#!/usr/bin/env python3
"""Login throughput: how many OIDC callbacks or SAML ACS posts one core of Portcullis finishes.

The inputs are made first, with the real IdPs, and each is used once:
  oidc  N logins are started at Portcullis and taken through the IdP (which already knows the
        user) up to the redirect back, so each holds a fresh state, login cookie and code;
  saml  N signed, unsolicited Responses (distinct IDs) are minted by the samlify IdP.
Then they are all presented to Portcullis at once (CONCURRENCY at a time) and Portcullis's own
CPU time (utime+stime from /proc) is divided by N. The IdP's CPU is not counted (for OIDC it
still answers the code exchange, on the other core). Every answer must be the redirect that
carries a new session cookie; anything else aborts the run.

Usage: logins.py oidc|saml COUNT PID PORTCULLIS_ADDR HOST IDP_URL [CA_FILE]
Prints one line: `<kind> <count> <cpu_us_per_login> <wall_logins_per_s>`.
"""
import concurrent.futures
import http.client
import http.cookiejar
import json
import os
import re
import ssl
import sys
import time
import urllib.parse
import urllib.request

CONCURRENCY = 16
BATCH = 200


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def gateway(addr, host, method, path, headers=None, body=None):
    """One request to Portcullis with the browser's Host; returns (status, headers)."""
    conn = http.client.HTTPConnection(addr, timeout=30)
    conn.request(method, path, body=body, headers={"Host": host, "Accept": "text/html", **(headers or {})})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status, resp.getheaders()


def set_cookies(headers):
    return [v.split(";", 1)[0] for k, v in headers if k.lower() == "set-cookie"]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def oidc_inputs(count, addr, host, idp, ca_file):
    """Starts `count` logins and takes each through the IdP to the callback URL."""
    jar = http.cookiejar.CookieJar()
    context = ssl.create_default_context(cafile=ca_file)
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(jar), NoRedirect, urllib.request.HTTPSHandler(context=context)
    )
    callback_prefix = f"http://{host}/.portcullis/oidc/callback"

    def visit(url, data=None):
        try:
            resp = opener.open(url, data=data, timeout=30)
            return resp.status, resp.headers, resp.read().decode()
        except urllib.error.HTTPError as e:  # 3xx arrive here with redirects disabled
            return e.code, e.headers, e.read().decode(errors="replace")

    inputs = []
    for _ in range(count):
        status, headers = gateway(addr, host, "GET", "/")
        location = dict((k.lower(), v) for k, v in headers).get("location", "")
        if status != 302 or not location.startswith(idp):
            sys.exit(f"login did not start: {status} {location}")
        login_cookie = [c for c in set_cookies(headers) if c.startswith("portcullis_login_")]
        url = location
        for _hop in range(10):
            if url.startswith(callback_prefix):
                break
            status, headers, body = visit(url)
            if status == 200 and "password" in body:  # the first login: the IdP's form
                action = re.search(r'action="([^"]+)"', body).group(1)
                data = urllib.parse.urlencode({"login": "alice", "password": "alice-bench"}).encode()
                status, headers, body = visit(urllib.parse.urljoin(url, action), data)
            url = urllib.parse.urljoin(url, headers.get("Location", ""))
        else:
            sys.exit(f"the IdP did not send the browser back: {url}")
        inputs.append(("GET", url[len(f"http://{host}"):], {"Cookie": "; ".join(login_cookie)}, None))
    return inputs


def saml_inputs(count, idp, sp_entity_id):
    inputs = []
    for _ in range(count):
        req = urllib.request.Request(
            f"{idp}/test/response", data=json.dumps({"sp": sp_entity_id, "user": "alice"}).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            saml_response = json.loads(resp.read())["SAMLResponse"]
        body = urllib.parse.urlencode({"SAMLResponse": saml_response, "RelayState": ""})
        inputs.append(
            ("POST", "/.portcullis/saml/acs", {"Content-Type": "application/x-www-form-urlencoded"}, body)
        )
    return inputs


def main():
    kind, count, pid, addr, host, idp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
    ca_file = sys.argv[7] if len(sys.argv) > 7 else None

    def present(item):
        method, path, headers, body = item
        status, answer = gateway(addr, host, method, path, headers, body)
        return status, any(c.startswith("portcullis_session=") for c in set_cookies(answer))

    # In batches: the test OpenID Provider keeps at most 1,000 artefacts (codes, sessions,
    # grants) and a code lives 60 s, so a batch is presented soon after it is made.
    ticks, wall, done = 0, 0.0, 0
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        while done < count:
            batch = min(BATCH, count - done)
            if kind == "oidc":
                inputs = oidc_inputs(batch, addr, host, idp, ca_file)
            else:
                inputs = saml_inputs(batch, idp, f"http://{host}/.portcullis/saml/metadata")
            before, started = cpu_ticks(pid), time.monotonic()
            results = list(pool.map(present, inputs))
            wall, ticks = wall + time.monotonic() - started, ticks + cpu_ticks(pid) - before
            failed = [status for status, signed_in in results if status not in (302, 303) or not signed_in]
            if failed:
                sys.exit(f"{kind}: {len(failed)} of {batch} logins did not sign in (statuses {sorted(set(failed))})")
            done += batch
    cpu_us = ticks * 1_000_000 / os.sysconf("SC_CLK_TCK") / count
    print(f"{kind} {count} {cpu_us:.1f} {count / wall:.1f}")


if __name__ == "__main__":
    main()
