"""A minimal OTLP/HTTP trace receiver for tests/api/otlp.rs.

Accepts `POST /v1/traces` with an `application/x-protobuf` body, decodes it with the
`opentelemetry-proto` package (ExportTraceServiceRequest), appends one JSON object per span to
OUT (trace/span/parent ids in hex, name, kind, times, attributes, status, resource attributes)
and every raw request body to OUT.raw, and answers with an empty ExportTraceServiceResponse.
Anything else gets 404/415. Prints "listening PORT" once bound on 127.0.0.1.

usage: python otlp_receiver.py OUT
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

OUT = sys.argv[1]


def value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        if self.headers.get("content-type", "") != "application/x-protobuf":
            self.send_error(415)
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with open(OUT + ".raw", "ab") as raw:
            raw.write(body)
        with open(OUT, "a", encoding="utf-8") as out:
            for rs in request.resource_spans:
                resource = attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.write(
                            json.dumps(
                                {
                                    "trace_id": s.trace_id.hex(),
                                    "span_id": s.span_id.hex(),
                                    "parent_span_id": s.parent_span_id.hex(),
                                    "name": s.name,
                                    "kind": s.kind,
                                    "start_ns": s.start_time_unix_nano,
                                    "end_ns": s.end_time_unix_nano,
                                    "attributes": attributes(s.attributes),
                                    "status_code": s.status.code,
                                    "status_message": s.status.message,
                                    "scope": ss.scope.name,
                                    "resource": resource,
                                }
                            )
                            + "\n"
                        )
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
