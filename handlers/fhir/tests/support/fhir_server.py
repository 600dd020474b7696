"""A small FHIR R4 server for the fhir adapter's tests, on loopback only.

Every resource it receives is validated with the fhir.resources package (R4B models, which share
R4's resources used here); it implements conditional create (If-None-Exist on identifier),
transaction Bundles (all or nothing, urn:uuid references resolved), Patient search by telecom,
name and birthdate, and a SMART Backend Services token endpoint that checks the client assertion
with PyJWT against a JWKS file (the one `wardhook keys smart` printed).

    python fhir_server.py --auth smart --jwks jwks.json --client-id wardhook-test
    python fhir_server.py --auth bearer:TOKEN | --auth basic:USER:PASS | --auth none
    python fhir_server.py --tls-cert server.pem --tls-key server.key   # HTTPS instead of HTTP

Prints `PORT <n>` once listening on 127.0.0.1. Test hooks (no auth):
    GET  /_test/store        every stored resource, by type
    GET  /_test/log          every FHIR request: method, path, query, If-None-Exist, auth scheme
    GET  /_test/assertions   the verified client assertions (header and claims)
    POST /_test/fail         {"match": "POST /fhir/Task", "status": 503, "code": "transient",
                              "retry_after": "7", "diagnostics": "…", "count": 1,
                              "after_commit": false}
    POST /_test/patient      a Patient to store as is (test data)
"""

import argparse
import base64
import copy
import json
import secrets
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from fhir.resources.R4B import get_fhir_model_class

LOCK = threading.Lock()
STORE = {}  # type -> {id: resource}
LOG = []
ASSERTIONS = []
SEEN_JTI = set()
TOKENS = {}  # token -> expiry (epoch seconds)
FAILURES = []
ARGS = None
PORT = 0
ORIGIN = ""  # http(s)://127.0.0.1:<port>
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def outcome(code, diagnostics=None, severity="error"):
    issue = {"severity": severity, "code": code}
    if diagnostics:
        issue["diagnostics"] = diagnostics
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class Reject(Exception):
    def __init__(self, status, code, diagnostics=None):
        super().__init__(code)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics


def validate(resource, expected_type=None):
    if not isinstance(resource, dict) or "resourceType" not in resource:
        raise Reject(400, "structure", "not a FHIR resource")
    rtype = resource["resourceType"]
    if expected_type and rtype != expected_type:
        raise Reject(400, "invalid", f"resourceType {rtype} at the {expected_type} endpoint")
    try:
        cls = get_fhir_model_class(rtype)
    except Exception:
        raise Reject(400, "not-supported", f"unknown resource type {rtype}")
    try:
        cls.model_validate(resource)
    except Exception as e:  # pydantic's message quotes the values: it is the "diagnostics"
        raise Reject(400, "invalid", str(e))


def identifier_matches(resource, query):
    """`identifier=system|value` (If-None-Exist) against a resource."""
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    wanted = params.get("identifier")
    if not wanted or len(params) != 1:
        raise Reject(400, "not-supported", "only identifier=system|value conditions")
    system, _, value = wanted[0].partition("|")
    return any(
        i.get("system") == system and i.get("value") == value
        for i in resource.get("identifier", [])
    )


def conditional_matches(store, rtype, condition):
    return [r for r in store.get(rtype, {}).values() if identifier_matches(r, condition)]


def store_new(store, resource):
    rtype = resource["resourceType"]
    resource = copy.deepcopy(resource)
    resource["id"] = uuid.uuid4().hex[:16]
    resource["meta"] = dict(resource.get("meta", {}), versionId="1",
                            lastUpdated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    store.setdefault(rtype, {})[resource["id"]] = resource
    return resource


def create(store, resource, condition):
    """(status, resource) for a create, conditional when `condition` is set."""
    rtype = resource["resourceType"]
    if condition:
        found = conditional_matches(store, rtype, condition)
        if len(found) == 1:
            return 200, found[0]
        if len(found) > 1:
            raise Reject(412, "multiple-matches", "several resources match the condition")
    return 201, store_new(store, resource)


def rewrite_refs(value, mapping):
    if isinstance(value, dict):
        return {k: (mapping.get(v, v) if k == "reference" and isinstance(v, str)
                    else rewrite_refs(v, mapping)) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite_refs(v, mapping) for v in value]
    return value


def transaction(bundle):
    validate(bundle, "Bundle")
    if bundle.get("type") != "transaction":
        raise Reject(400, "not-supported", "only transaction Bundles")
    work = copy.deepcopy(STORE)
    entries = bundle.get("entry", [])
    mapping, results = {}, []
    # Every entry is validated before anything is written; the writes go to a copy of the
    # store that replaces it only when every entry succeeded (all or nothing).
    for entry in entries:
        req = entry.get("request", {})
        if req.get("method") != "POST":
            raise Reject(400, "not-supported", "only POST entries")
        resource = entry.get("resource")
        validate(resource, req.get("url"))
    for entry in entries:
        resource = rewrite_refs(entry["resource"], mapping)
        status, stored = create(work, resource, entry["request"].get("ifNoneExist"))
        if entry.get("fullUrl"):
            mapping[entry["fullUrl"]] = f"{stored['resourceType']}/{stored['id']}"
        results.append((status, stored))
    # References to entries that came later.
    for rtype in work:
        for rid, res in list(work[rtype].items()):
            work[rtype][rid] = rewrite_refs(res, mapping)
    for rtype, by_id in work.items():
        for rid, res in by_id.items():
            for ref in collect_refs(res):
                if ref.startswith("urn:uuid:"):
                    raise Reject(400, "processing", "unresolved reference in the transaction")
    STORE.clear()
    STORE.update(work)
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {"response": {"status": "201 Created" if s == 201 else "200 OK",
                          "location": f"{r['resourceType']}/{r['id']}/_history/1"}}
            for s, r in results
        ],
    }


def collect_refs(value):
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "reference" and isinstance(v, str):
                yield v
            else:
                yield from collect_refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from collect_refs(v)


def search_patients(query):
    params = urllib.parse.parse_qs(query)
    hits = []
    for p in STORE.get("Patient", {}).values():
        ok = True
        for name, values in params.items():
            v = values[0]
            if name == "telecom":
                system, _, number = v.partition("|")
                ok &= any(t.get("system") == system and t.get("value") == number
                          for t in p.get("telecom", []))
            elif name == "name":
                words = " ".join(
                    " ".join([n.get("text", ""), n.get("family", "")] + n.get("given", []))
                    for n in p.get("name", [])).lower()
                ok &= v.lower() in words
            elif name == "birthdate":
                ok &= p.get("birthDate") == v
            elif name == "_count":
                pass
            else:
                raise Reject(400, "not-supported", f"search parameter {name}")
        if ok:
            hits.append(p)
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(hits),
        "entry": [{"fullUrl": f"{ORIGIN}/fhir/Patient/{p['id']}",
                   "resource": p, "search": {"mode": "match"}} for p in hits],
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status, body, headers=None, content_type="application/fhir+json"):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    # --- auth -------------------------------------------------------------------------------
    def authorized(self):
        mode = ARGS.auth
        header = self.headers.get("Authorization", "")
        if mode == "none":
            return True
        if mode == "smart":
            if not header.startswith("Bearer "):
                return False
            expiry = TOKENS.get(header[7:])
            return expiry is not None and expiry > time.time()
        if mode.startswith("bearer:"):
            return secrets.compare_digest(header, "Bearer " + mode[7:])
        if mode.startswith("basic:"):
            want = base64.b64encode(mode[6:].encode()).decode()
            return secrets.compare_digest(header, "Basic " + want)
        return False

    def token(self):
        form = dict(urllib.parse.parse_qsl(self.body().decode()))
        token_url = f"{ORIGIN}/auth/token"
        if form.get("grant_type") != "client_credentials":
            return self.send_json(400, {"error": "unsupported_grant_type"}, content_type="application/json")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return self.send_json(400, {"error": "invalid_request"}, content_type="application/json")
        assertion = form.get("client_assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            with open(ARGS.jwks) as f:
                jwks = json.load(f)
            keys = [k for k in jwks["keys"] if k.get("kid") == header.get("kid")]
            if len(keys) != 1 or header.get("alg") not in ("RS384", "ES384"):
                raise ValueError("unknown kid or alg")
            key = jwt.PyJWK(keys[0], algorithm=header["alg"]).key
            claims = jwt.decode(
                assertion, key, algorithms=[header["alg"]], audience=token_url,
                issuer=ARGS.client_id,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
            if claims["sub"] != ARGS.client_id:
                raise ValueError("sub is not the client id")
            if claims["exp"] > time.time() + 300 + 5:
                raise ValueError("exp more than 5 minutes ahead")
            with LOCK:
                if claims["jti"] in SEEN_JTI:
                    raise ValueError("jti replayed")
                SEEN_JTI.add(claims["jti"])
                ASSERTIONS.append({"header": header, "claims": claims})
        except Exception as e:
            sys.stderr.write(f"assertion refused: {e}\n")
            return self.send_json(401, {"error": "invalid_client"}, content_type="application/json")
        scope = form.get("scope", "")
        access = secrets.token_urlsafe(24)
        with LOCK:
            TOKENS[access] = time.time() + ARGS.token_ttl
        return self.send_json(200, {"access_token": access, "token_type": "bearer",
                                    "expires_in": ARGS.expires_in, "scope": scope},
                              headers={"Cache-Control": "no-store"}, content_type="application/json")

    # --- dispatch -----------------------------------------------------------------------------
    def injected(self, path):
        """The first queued failure for this request, consumed."""
        line = f"{self.command} {path}"
        with LOCK:
            for f in FAILURES:
                if line.startswith(f["match"]) and f["count"] > 0:
                    f["count"] -= 1
                    return dict(f)
        return None

    def fail(self, f):
        headers = {"Retry-After": f["retry_after"]} if f.get("retry_after") else {}
        body = outcome(f["code"], f.get("diagnostics")) if f.get("code") else {"error": "x"}
        self.send_json(f["status"], body, headers)

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        path, query = url.path, url.query
        if path.startswith("/_test/"):
            return self.test_hook(path)
        if path == "/fhir/.well-known/smart-configuration" and self.command == "GET":
            return self.send_json(200, {
                "token_endpoint": ORIGIN.replace("127.0.0.1", ARGS.token_host) + "/auth/token",
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
                "grant_types_supported": ["client_credentials"],
                "capabilities": ["client-confidential-asymmetric"],
            }, content_type="application/json")
        if path == "/auth/token" and self.command == "POST":
            return self.token()
        if not path.startswith("/fhir"):
            return self.send_json(404, outcome("not-found"))
        raw = self.body()
        entry = {"method": self.command, "path": path, "query": query,
                 "if_none_exist": self.headers.get("If-None-Exist"),
                 "auth": self.headers.get("Authorization", "").split(" ")[0]}
        with LOCK:
            LOG.append(entry)
        if not self.authorized():
            return self.send_json(401, outcome("login"), {"WWW-Authenticate": "Bearer"})
        failure = self.injected(path)
        if failure and not failure.get("after_commit"):
            return self.fail(failure)
        try:
            with LOCK:
                status, body, headers = self.fhir(path, query, raw)
        except Reject as r:
            return self.send_json(r.status, outcome(r.code, r.diagnostics))
        if failure:  # the work is done, but the answer is "lost"
            return self.fail(failure)
        self.send_json(status, body, headers)

    def fhir(self, path, query, raw):
        parts = [p for p in path.split("/") if p][1:]
        if self.command == "POST" and not parts:
            return 200, transaction(json.loads(raw)), {}
        if self.command == "POST" and len(parts) == 1:
            resource = json.loads(raw)
            validate(resource, parts[0])
            status, stored = create(STORE, resource, self.headers.get("If-None-Exist"))
            loc = f"{ORIGIN}/fhir/{stored['resourceType']}/{stored['id']}/_history/1"
            return status, stored, {"Location": loc}
        if self.command == "GET" and parts == ["Patient"]:
            return 200, search_patients(query), {}
        if self.command == "GET" and len(parts) == 2:
            found = STORE.get(parts[0], {}).get(parts[1])
            if found:
                return 200, found, {}
            raise Reject(404, "not-found")
        raise Reject(405, "not-supported", "not implemented by the test server")

    def test_hook(self, path):
        with LOCK:
            if path == "/_test/store":
                return self.send_json(200, {t: list(v.values()) for t, v in STORE.items()})
            if path == "/_test/log":
                return self.send_json(200, LOG)
            if path == "/_test/assertions":
                return self.send_json(200, ASSERTIONS)
            if path == "/_test/fail":
                f = json.loads(self.body())
                f.setdefault("count", 1)
                FAILURES.append(f)
                return self.send_json(200, {})
            if path == "/_test/patient":
                p = json.loads(self.body())
                validate(p, "Patient")
                return self.send_json(201, store_new(STORE, p))
        return self.send_json(404, {})

    do_GET = handle_any
    do_POST = handle_any
    do_PUT = handle_any


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that refuses our certificate ends the handshake: one line, no traceback.
        sys.stderr.write(f"connection failed: {sys.exc_info()[1]}\n")


def main():
    global ARGS, PORT, ORIGIN
    parser = argparse.ArgumentParser()
    parser.add_argument("--auth", default="none")
    parser.add_argument("--jwks")
    parser.add_argument("--client-id", default="wardhook-test")
    parser.add_argument("--token-host", default="127.0.0.1", help="host the smart-configuration names")
    parser.add_argument("--token-ttl", type=float, default=300, help="how long the server honours a token")
    parser.add_argument("--expires-in", type=int, default=300, help="what the token response says")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    ARGS = parser.parse_args()
    server = Server(("127.0.0.1", 0), Handler)
    PORT = server.server_address[1]
    ORIGIN = f"http://127.0.0.1:{PORT}"
    if ARGS.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(ARGS.tls_cert, ARGS.tls_key)
        # The handshake runs in the request's thread, so a client that refuses the
        # certificate does not stall the accept loop.
        server.socket = context.wrap_socket(server.socket, server_side=True,
                                            do_handshake_on_connect=False)
        ORIGIN = f"https://127.0.0.1:{PORT}"
    print(f"PORT {PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
