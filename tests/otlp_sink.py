"""Tiny OTLP endpoints (HTTP and gRPC) for tests that need what an exporter sent, without the pipeline."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

__all__ = ["collecting_otlp_grpc_sink", "collecting_otlp_sink", "otlp_grpc_sink", "otlp_http_sink"]


@contextmanager
def otlp_http_sink(on_body: Callable[[bytes], None], status: int = 200) -> Iterator[str]:
    """Serve POST /v1/traces on 127.0.0.1; each accepted body (gzip undone) goes to `on_body`.

    Any status other than 200 rejects the request (400 is not retried by exporters).
    Yields the base URL.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            assert self.path == "/v1/traces"
            if status == 200:
                on_body(body)
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _kept() -> tuple[list[bytes], Callable[[bytes], None]]:
    """A list, and a function the server threads call to append to it."""
    bodies: list[bytes] = []
    lock = threading.Lock()

    def keep(body: bytes) -> None:
        with lock:
            bodies.append(body)

    return bodies, keep


@contextmanager
def collecting_otlp_sink() -> Iterator[tuple[str, list[bytes]]]:
    """`otlp_http_sink` that keeps every accepted body, in arrival order: yields (base URL, bodies)."""
    bodies, keep = _kept()
    with otlp_http_sink(keep) as url:
        yield url, bodies


@contextmanager
def otlp_grpc_sink(on_body: Callable[[bytes], None]) -> Iterator[str]:
    """Serve OTLP/gRPC trace export on 127.0.0.1; each request, serialized, goes to `on_body`.

    Yields host:port.
    """

    class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (generated name)
            on_body(request.SerializeToString())
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


@contextmanager
def collecting_otlp_grpc_sink() -> Iterator[tuple[str, list[bytes]]]:
    """`otlp_grpc_sink` that keeps every request, serialized, in arrival order: yields (host:port, bodies)."""
    bodies, keep = _kept()
    with otlp_grpc_sink(keep) as endpoint:
        yield endpoint, bodies
