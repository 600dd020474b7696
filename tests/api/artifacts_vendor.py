"""A vendor's recording API for the artifact tests: HTTPS with the test CA's certificate,
basic auth, a WAV written with the `wave` module (a canary string inside its frames), and the
failure answers the capture step must classify. Paths starting with /flaky answer 503 to their
first GET and /cut send half the body, then close the connection, on their first GET; both serve
the recording after that. Prints its port, then serves until killed.

argv: cert key user password wav_path log_path slow_flag_path max_ok_bytes
"""
import base64, http.server, os, ssl, sys, threading, time

cert, key, user, password, wav_path, log_path, slow_flag, _ = sys.argv[1:9]
expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
served = {}  # path -> GETs seen
served_lock = threading.Lock()


def first_get(path):
    with served_lock:
        served[path] = served.get(path, 0) + 1
        return served[path] == 1


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

    def send_half(self, data):
        """Announce all of `data`, send its first half."""
        self.send_response(200)
        self.send_header("Content-Type", "audio/x-wav")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()

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
            try:
                for _ in range(64):
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass  # the client stopped reading at its cap, as it should
            return
        data = open(wav_path, "rb").read()
        if self.path.startswith("/flaky") and first_get(self.path):
            return self.send(503, "application/json", b"{}")
        if self.path.startswith("/cut") and first_get(self.path):
            self.send_half(data)
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if self.path.startswith("/slow") and os.path.exists(slow_flag):
            self.send_half(data)
            time.sleep(60)
            return
        self.send(200, "audio/x-wav", data)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
