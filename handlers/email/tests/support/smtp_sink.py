"""A real SMTP server on loopback for wardhook's e-mail tests (aiosmtpd).

Usage: python3 smtp_sink.py OUT_DIR [--starttls CERT KEY | --implicit-tls CERT KEY]

Listens on 127.0.0.1 on a free port and prints "PORT <n>" once it accepts connections. Each
accepted message is written to OUT_DIR/<n>.json: the envelope, whether the session was
encrypted, the raw message, its decoded headers and text/HTML parts, and each attachment's
file name, type, size and SHA-256 (of the decoded bytes). Recipients starting
with "tempfail" get 451, with "reject" 550, so tests can drive both SMTP error classes.
"""

import asyncio
import email
import email.policy
import hashlib
import itertools
import json
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.counter = itertools.count(1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("tempfail"):
            return "451 4.3.0 mailbox busy, try again later"
        if address.startswith("reject"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.content.decode("utf-8", "replace")
        msg = email.message_from_string(raw, policy=email.policy.default)
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            # session.ssl is set by STARTTLS; an implicit-TLS transport carries its own.
            "tls": session.ssl is not None
            or (server.transport is not None and server.transport.get_extra_info("ssl_object") is not None),
            "headers": {k.lower(): str(v) for k, v in msg.items()},
            "content_type": msg.get_content_type(),
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
            "raw": raw,
            "attachments": [
                {
                    "filename": part.get_filename(),
                    "content_type": part.get_content_type(),
                    "size": len(part.get_payload(decode=True)),
                    "sha256": hashlib.sha256(part.get_payload(decode=True)).hexdigest(),
                }
                for part in msg.iter_attachments()
            ],
        }
        n = next(self.counter)
        tmp = os.path.join(self.out_dir, f".{n}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.out_dir, f"{n:04}.json"))
        return "250 2.0.0 Message accepted"


def tls_context(cert, key):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def main():
    out_dir = sys.argv[1]
    mode = sys.argv[2] if len(sys.argv) > 2 else None
    handler = Sink(out_dir)
    loop = asyncio.get_running_loop()
    kwargs = {}
    server_ssl = None
    if mode == "--starttls":
        kwargs = {"tls_context": tls_context(sys.argv[3], sys.argv[4]), "require_starttls": True}
    elif mode == "--implicit-tls":
        server_ssl = tls_context(sys.argv[3], sys.argv[4])
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.wardhook.test", **kwargs),
        "127.0.0.1",
        0,
        ssl=server_ssl,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
