"""A vendor's recording API for the artifact tests: HTTPS with the test CA's certificate,
basic auth, a WAV written with the `wave` module (a canary string inside its frames), and the
failure answers the capture step must classify. Prints its port, then serves until killed.

argv: cert key user password wav_path log_path slow_flag_path max_ok_bytes
"""
import base64, http.server, os, ssl, sys, time

cert, key, user, password, wav_path, log_path, slow_flag, _ = sys.argv[1:9]
expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def note(self):
        with open(log_path, "a") as f:
            f.write(f"{self.command} {self.path}\n")

    def send(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_DELETE(self):
        self.note()
        if self.headers.get("Authorization") != expected:
            return self.send(401, "application/json", b"{}")
        self.send_response(204)
        self.end_headers()

    def do_GET(self):
        self.note()
        if self.path.startswith("/wrongauth") or self.headers.get("Authorization") != expected:
            return self.send(401, "application/json", b'{"message":"Authenticate"}')
        if self.path.startswith("/missing"):
            return self.send(404, "application/json", b'{"message":"not found"}')
        if self.path.startswith("/html"):
            return self.send(200, "text/html", b"<html>login</html>")
        if self.path.startswith("/big"):
            self.send_response(200)
            self.send_header("Content-Type", "audio/x-wav")
            self.end_headers()
            # No Content-Length: the cap must hold while streaming.
            for _ in range(64):
                self.wfile.write(b"\0" * 65536)
            return
        data = open(wav_path, "rb").read()
        if self.path.startswith("/slow") and os.path.exists(slow_flag):
            self.send_response(200)
            self.send_header("Content-Type", "audio/x-wav")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            time.sleep(60)
            return
        self.send(200, "audio/x-wav", data)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
