"""An HL7 v2 MLLP receiver on loopback for wardhook's hl7v2 tests, built on python-hl7
(`hl7.mllp` for the framing, `hl7.parse` for the message, `Message.create_ack` for the answer).

Usage: python mllp_server.py OUT_DIR [--acks B1,B2,...] [--tls CERT KEY [--client-ca CA]]

Listens on 127.0.0.1 on a free port and prints "PORT <n>" once it accepts connections. Every
block received is parsed and written to OUT_DIR/<n>.json: the connection number, whether it was
TLS, the client certificate's common name, the raw text, and every segment's fields as
repetitions -> components -> sub-components, each unescaped by python-hl7 (MSH-1 and MSH-2 raw).
A block python-hl7 cannot parse is recorded with "error" and answered with nothing.

The n-th message gets behaviour Bn (the last one repeats; default "accept"):
  accept, error, reject  AA / AE / AR, or CA / CE / CR when MSH-15 asks for enhanced mode
  accept-close           AA / CA, then the connection is closed (an idle timeout on their side)
  wrong-id               an AA/CA whose MSA-2 names another message
  silence                no answer; the connection stays open
  close                  the connection is closed without an answer
  garbage                a line that is not MLLP
"""

import asyncio
import json
import os
import ssl
import sys

import hl7
from hl7.mllp import start_hl7_server

CODES = {
    "accept": ("AA", "CA"),
    "error": ("AE", "CE"),
    "reject": ("AR", "CR"),
    "wrong-id": ("AA", "CA"),
    "accept-close": ("AA", "CA"),
}


def normalise(message, node, depth):
    """Field (0) -> repetitions (1) -> components (2) -> unescaped sub-components (3).
    python-hl7 stops splitting where a part holds no separator; the levels are filled in."""
    if depth == 3:
        return message.unescape(str(node))
    if isinstance(node, str):
        return [normalise(message, node, depth + 1)]
    return [normalise(message, child, depth + 1) for child in node]


def describe(message):
    segments = []
    for segment in message:
        seg_id = str(segment[0])
        fields = [seg_id]
        for index, field in enumerate(segment[1:], start=1):
            if seg_id == "MSH" and index <= 2:
                fields.append(str(field))
            else:
                fields.append(normalise(message, field, 0))
        segments.append({"id": seg_id, "fields": fields})
    return segments


class Receiver:
    def __init__(self, out_dir, behaviours):
        self.out_dir = out_dir
        self.behaviours = behaviours
        self.messages = 0
        self.connections = 0

    def next_behaviour(self):
        self.messages += 1
        index = min(self.messages, len(self.behaviours)) - 1
        return self.messages, self.behaviours[index]

    def record(self, n, record):
        tmp = os.path.join(self.out_dir, f".{n}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.out_dir, f"{n:04}.json"))

    async def serve(self, reader, writer):
        self.connections += 1
        connection = self.connections
        ssl_object = writer.get_extra_info("ssl_object")
        peer_cn = None
        if ssl_object is not None:
            cert = ssl_object.getpeercert()
            for rdn in (cert or {}).get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        peer_cn = value
        try:
            while True:
                block = await reader.readblock()
                n, behaviour = self.next_behaviour()
                record = {
                    "connection": connection,
                    "tls": ssl_object is not None,
                    "peer_cn": peer_cn,
                    "behaviour": behaviour,
                }
                try:
                    text = block.decode("utf-8")
                    record["raw"] = text
                    message = hl7.parse(text)
                    record["segments"] = describe(message)
                except Exception as e:  # a parse failure is the test's finding
                    record["error"] = f"{type(e).__name__}: {e}"
                    self.record(n, record)
                    continue
                self.record(n, record)
                if behaviour == "silence":
                    continue
                if behaviour == "close":
                    break
                if behaviour == "garbage":
                    writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                    await writer.drain()
                    continue
                enhanced = str(message.segment("MSH")(15)) != ""
                code = CODES[behaviour][1 if enhanced else 0]
                ack = message.create_ack(code)
                if behaviour == "wrong-id":
                    ack.segment("MSA")[2] = ack.create_field(["not-" + str(message.segment("MSH")(10))])
                writer.writemessage(ack)
                await writer.drain()
                if behaviour == "accept-close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


def tls_context(cert, key, client_ca):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx


async def main():
    args = sys.argv[1:]
    out_dir = args.pop(0)
    behaviours = ["accept"]
    server_ssl = None
    cert = key = client_ca = None
    while args:
        flag = args.pop(0)
        if flag == "--acks":
            behaviours = args.pop(0).split(",")
            for b in behaviours:
                if b not in CODES and b not in ("silence", "close", "garbage"):
                    raise SystemExit(f"unknown behaviour {b}")
        elif flag == "--tls":
            cert, key = args.pop(0), args.pop(0)
        elif flag == "--client-ca":
            client_ca = args.pop(0)
        else:
            raise SystemExit(f"unknown flag {flag}")
    if cert is not None:
        server_ssl = tls_context(cert, key, client_ca)
    receiver = Receiver(out_dir, behaviours)
    server = await start_hl7_server(
        receiver.serve, "127.0.0.1", 0, encoding="utf-8", ssl=server_ssl
    )
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
