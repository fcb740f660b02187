#!/usr/bin/env python3
"""smtpd.py - a real SMTP server for the mail tests (Debian's python3-aiosmtpd).

Listens on 127.0.0.1:PORT and stores every message it accepts in OUT:
NNNN.eml holds the bytes of the message as received (after the DATA
dot-unstuffing, CRLF line ends), NNNN.json the envelope and the session:

    {"mail_from": "...", "rcpt_tos": [...], "tls": bool, "login": "..."|null}

Options select what the tests need: STARTTLS with a certificate
(--starttls CERT KEY, --require-starttls), implicit TLS (--tls CERT KEY),
AUTH with one account (--auth USER:PASSWORD; --auth-required makes MAIL
refuse unauthenticated clients; --auth-plain allows AUTH without TLS).
It runs until killed; the tests start it whenever they want the server
to be "up", before or after the master.
"""

import argparse
import json
import os
import signal
import ssl
import sys
import threading
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Saver:
    def __init__(self, out):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.count = len(list(self.out.glob("*.eml")))

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            n = self.count
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            # Implicit TLS or after STARTTLS alike.
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "login": (session.auth_data if session.authenticated
                      else None),
        }
        tmp = self.out / f".{n:04d}.tmp"
        tmp.write_bytes(data)
        (self.out / f"{n:04d}.json").write_text(json.dumps(meta))
        os.rename(tmp, self.out / f"{n:04d}.eml")
        print(f"smtpd: message {n} from {envelope.mail_from} to "
              f"{envelope.rcpt_tos}, {len(data)} bytes", flush=True)
        return f"250 OK queued as {n}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    ap.add_argument("--require-starttls", action="store_true")
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    ap.add_argument("--auth", metavar="USER:PASSWORD")
    ap.add_argument("--auth-required", action="store_true")
    ap.add_argument("--auth-plain", action="store_true",
                    help="offer AUTH without TLS")
    a = ap.parse_args()

    kw = {}
    if a.starttls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*a.starttls)
        kw["tls_context"] = ctx
        kw["require_starttls"] = a.require_starttls
    if a.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*a.tls)
        kw["ssl_context"] = ctx
    if a.auth:
        user, _, password = a.auth.partition(":")

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword) and
                  auth_data.login.decode() == user and
                  auth_data.password.decode() == password)
            print(f"smtpd: AUTH {mechanism} "
                  f"{'accepted' if ok else 'refused'}", flush=True)
            # handled=False: aiosmtpd answers 535 itself on a refusal.
            return AuthResult(success=ok, handled=False,
                              auth_data=auth_data.login.decode() if ok
                              else None)

        kw["authenticator"] = authenticator
        kw["auth_required"] = a.auth_required
        kw["auth_require_tls"] = not a.auth_plain
    ctl = Controller(Saver(a.out), hostname="127.0.0.1", port=a.port,
                     server_hostname="localhost", **kw)
    ctl.start()
    print(f"smtpd: listening on 127.0.0.1:{a.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    ctl.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
