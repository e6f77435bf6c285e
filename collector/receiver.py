"""The built-in OTLP receiver: OTLP/HTTP POST /v1/traces and OTLP/gRPC TraceService/Export to Kafka.

Same contract as the Collector's otlp receiver + kafka exporter: success only
after Kafka acknowledged; malformed -> 400 / INVALID_ARGUMENT; too large ->
413 / RESOURCE_EXHAUSTED; Kafka backlog -> 429 + Retry-After / UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from collector.kafka_writer import DeliveryFailed, KafkaWriter, QueueFull
from collector.payloads import BadRequest, TooLarge, parse_json, parse_protobuf, span_count, split_into_records
from llmops.config import ReceiverSettings

__all__ = ["OtlpReceiver", "ReceiverStats"]

log = logging.getLogger(__name__)

_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


@dataclass(slots=True)
class ReceiverStats:
    requests: int = 0
    spans: int = 0
    records: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, why: str) -> None:
        self.rejected[why] = self.rejected.get(why, 0) + 1


class OtlpReceiver:
    def __init__(self, settings: ReceiverSettings, writer: KafkaWriter) -> None:
        self._settings = settings
        self._writer = writer
        self._runner: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None
        self.stats = ReceiverStats()
        self.http_port: int | None = None
        self.grpc_port: int | None = None

    # -- shared path ----------------------------------------------------
    async def _accept(self, wire: bytes, parsed) -> None:  # type: ignore[no-untyped-def]
        records = split_into_records(parsed, self._settings.max_record_bytes, wire)
        await asyncio.wait_for(self._writer.send(records), timeout=self._settings.delivery_timeout_s + 5)
        self.stats.requests += 1
        self.stats.spans += span_count(parsed)
        self.stats.records += len(records)

    # -- HTTP -----------------------------------------------------------
    def http_app(self) -> web.Application:
        # aiohttp enforces the size limit while reading (413); we enforce it again after inflating.
        app = web.Application(client_max_size=self._settings.max_request_bytes)
        app.router.add_post("/v1/traces", self._http_export)
        return app

    async def _http_export(self, request: web.Request) -> web.Response:
        content_type = request.content_type
        if content_type not in (_PROTOBUF, _JSON):
            self.stats.reject("unsupported_media_type")
            return _status_response(415, f"unsupported Content-Type {content_type!r}", _JSON)
        try:
            # aiohttp has already undone Content-Encoding (gzip, deflate) and enforced
            # client_max_size on the inflated body while reading it.
            body = await request.read()
            if content_type == _PROTOBUF:
                parsed, wire = parse_protobuf(body), body
            else:
                parsed = parse_json(body)
                wire = parsed.SerializeToString()
            await self._accept(wire, parsed)
        except web.HTTPRequestEntityTooLarge:
            self.stats.reject("too_large")
            return _status_response(413, f"request body exceeds {self._settings.max_request_bytes} bytes", content_type)
        except TooLarge as exc:
            self.stats.reject("too_large")
            return _status_response(413, str(exc), content_type)
        except BadRequest as exc:
            self.stats.reject("malformed")
            return _status_response(400, str(exc), content_type)
        except QueueFull as exc:
            self.stats.reject("backpressure")
            return _status_response(429, f"pipeline is busy, retry later: {exc}", content_type, retry_after=1)
        except (DeliveryFailed, asyncio.TimeoutError) as exc:
            self.stats.reject("kafka_unavailable")
            return _status_response(503, f"Kafka did not acknowledge: {exc}", content_type, retry_after=2)
        response = ExportTraceServiceResponse()
        if content_type == _JSON:
            return web.Response(text=json_format.MessageToJson(response), content_type=_JSON)
        return web.Response(body=response.SerializeToString(), content_type=_PROTOBUF)

    # -- gRPC -----------------------------------------------------------
    async def _grpc_export(self, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            if len(body) > self._settings.max_request_bytes:
                raise TooLarge(f"request of {len(body)} bytes exceeds {self._settings.max_request_bytes}")
            parsed = parse_protobuf(body)
            await self._accept(body, parsed)
        except TooLarge as exc:
            self.stats.reject("too_large")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except BadRequest as exc:
            self.stats.reject("malformed")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except QueueFull as exc:
            self.stats.reject("backpressure")
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"pipeline is busy, retry later: {exc}")
        except (DeliveryFailed, asyncio.TimeoutError) as exc:
            self.stats.reject("kafka_unavailable")
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"Kafka did not acknowledge: {exc}")
        return ExportTraceServiceResponse().SerializeToString()

    # -- lifecycle ------------------------------------------------------
    async def start(self) -> None:
        host = self._settings.listen
        self._runner = web.AppRunner(self.http_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, self._settings.http_port)
        await site.start()
        self.http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        limit = self._settings.max_request_bytes + 1024
        self._grpc = grpc.aio.server(options=[("grpc.max_receive_message_length", limit)])
        handler = grpc.unary_unary_rpc_method_handler(self._grpc_export)  # raw bytes: we parse, so we choose the status
        self._grpc.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(_SERVICE, {"Export": handler})])
        self.grpc_port = self._grpc.add_insecure_port(f"{host}:{self._settings.grpc_port}")
        await self._grpc.start()
        log.info("otlp receiver listening", extra={"http_port": self.http_port, "grpc_port": self.grpc_port})

    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests, flush the producer. Idempotent."""
        if self._grpc is not None:
            await self._grpc.stop(grace=5)
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        remaining = await asyncio.to_thread(self._writer.close)
        if remaining:
            log.error("%d records were not acknowledged by Kafka at shutdown", remaining)


def _status_response(status: int, message: str, content_type: str, retry_after: int | None = None) -> web.Response:
    """OTLP/HTTP error body: a google.rpc.Status in the request's encoding."""
    code = {400: code_pb2.INVALID_ARGUMENT, 413: code_pb2.RESOURCE_EXHAUSTED, 415: code_pb2.INVALID_ARGUMENT,
            429: code_pb2.UNAVAILABLE, 503: code_pb2.UNAVAILABLE}.get(status, code_pb2.UNKNOWN)  # fmt: skip
    body = status_pb2.Status(code=code, message=message)
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    if content_type == _PROTOBUF:
        return web.Response(status=status, body=body.SerializeToString(), content_type=_PROTOBUF, headers=headers)
    return web.Response(status=status, text=json_format.MessageToJson(body), content_type=_JSON, headers=headers)
