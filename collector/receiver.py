"""The built-in OTLP receiver: OTLP/HTTP POST /v1/traces and OTLP/gRPC TraceService/Export to Kafka.

Same contract as the Collector's otlp receiver + kafka exporter: success only
after Kafka acknowledged. Status codes follow OTLP's retry rules (HTTP 429,
502, 503, 504 and gRPC UNAVAILABLE are retried by clients; the rest are
permanent):

- no or wrong bearer token (when tokens are configured) -> 401 / UNAUTHENTICATED
- malformed body, bad gzip, wrong JSON types or enum names -> 400 / INVALID_ARGUMENT
- body over max_request_bytes (declared, received or inflated) -> 413 / RESOURCE_EXHAUSTED
  (no RetryInfo, so permanent); a span too big for one Kafka record -> 413 / INVALID_ARGUMENT
- worker group lag over its bound, or the producer queue full -> 429 + Retry-After /
  UNAVAILABLE with RetryInfo
- Kafka did not acknowledge -> 503 + Retry-After / UNAVAILABLE with RetryInfo

Every refusal is decided before the first record is produced, so a refused
request leaves nothing in Kafka (collector/kafka_writer.py says what happens
once producing started).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import ssl
from dataclasses import dataclass, field

import grpc
from aiohttp import hdrs, web
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from collector.config import ReceiverSettings
from collector.kafka_writer import DeliveryFailed, KafkaWriter, QueueFull
from collector.lag import LagGate
from collector.payloads import (
    BadRequest,
    TooLarge,
    UnsupportedEncoding,
    inflate,
    parse_json,
    parse_protobuf,
    span_count,
    split_into_records,
)
from processors.core.errors import RetryableError

__all__ = ["OtlpReceiver", "ReceiverStats"]

log = logging.getLogger(__name__)

_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


class _SpanTooLarge(TooLarge):
    """One span does not fit in a Kafka record: permanent (413 / INVALID_ARGUMENT)."""


class _Busy(RetryableError):
    """The workers are behind: refuse, retryable."""


@dataclass(slots=True)
class ReceiverStats:
    requests: int = 0
    spans: int = 0
    records: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, why: str) -> None:
        self.rejected[why] = self.rejected.get(why, 0) + 1


class OtlpReceiver:
    def __init__(self, settings: ReceiverSettings, writer: KafkaWriter, lag_gate: LagGate | None = None) -> None:
        self._settings = settings
        self._writer = writer
        self._lag_gate = lag_gate
        self._refusing = False
        # Digests, so every comparison is between equal-length values and none short-circuits.
        self._token_digests = [hashlib.sha256(t.get_secret_value().encode()).digest() for t in settings.bearer_tokens]
        self._runner: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None
        self.stats = ReceiverStats()
        self.http_port: int | None = None
        self.grpc_port: int | None = None

    # -- shared path ----------------------------------------------------
    def _authorized(self, header: str | None) -> bool:
        """`Bearer <token>` against the configured tokens (scheme case-insensitive, as RFC 6750)."""
        if not self._token_digests:
            return True
        scheme, _, token = (header or "").partition(" ")
        digest = hashlib.sha256(token.strip().encode()).digest()
        matched = False
        for expected in self._token_digests:  # no early exit: the time does not say which token matched
            matched |= hmac.compare_digest(digest, expected)
        return matched and scheme.lower() == "bearer"

    def _retry_after_s(self) -> int:
        return max(1, math.ceil(2 * self._settings.lag_check_interval_s))

    def _admit(self) -> None:
        """Refuse before reading or producing anything while the workers are too far behind."""
        if self._lag_gate is None:
            return
        lag = self._lag_gate.over_bound()
        if (lag is not None) != self._refusing:  # log the transitions, not every request
            self._refusing = lag is not None
            if self._refusing:
                log.warning(
                    "workers are %d records behind (limit %d): refusing new spans", lag, self._lag_gate.max_records
                )
            else:
                log.warning("workers caught up: accepting spans again")
        if lag is not None:
            raise _Busy(f"workers are {lag} Kafka records behind (limit {self._lag_gate.max_records}), retry later")

    async def _accept(self, wire: bytes, parsed: ExportTraceServiceRequest) -> None:
        try:
            records = split_into_records(parsed, self._settings.max_record_bytes, wire)
        except TooLarge as exc:
            raise _SpanTooLarge(str(exc)) from exc
        if self._lag_gate is not None:
            self._lag_gate.note_produced(
                len(records)
            )  # counted before sending: errs high, never low, until the next measurement
        await asyncio.wait_for(self._writer.send(records), timeout=self._settings.delivery_timeout_s + 5)
        self.stats.requests += 1
        self.stats.spans += span_count(parsed)
        self.stats.records += len(records)

    # -- HTTP -----------------------------------------------------------
    def http_app(self) -> web.Application:
        # aiohttp enforces the size limit on the body as received (413); `inflate` bounds it again inflated.
        app = web.Application(client_max_size=self._settings.max_request_bytes)
        app.router.add_post("/v1/traces", self._http_export)
        return app

    async def _http_export(self, request: web.Request) -> web.Response:
        content_type = request.content_type
        reply_type = content_type if content_type in (_PROTOBUF, _JSON) else _JSON
        limit = self._settings.max_request_bytes
        if not self._authorized(request.headers.get(hdrs.AUTHORIZATION)):
            self.stats.reject("unauthenticated")
            response = _status_response(401, "missing or wrong bearer token", reply_type)
            response.headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
            return _closing(response)
        if request.content_length is not None and request.content_length > limit:
            # Refused from the header: the body is never read, the connection is closed.
            self.stats.reject("too_large")
            return _closing(
                _status_response(413, f"request body of {request.content_length} bytes exceeds {limit}", reply_type)
            )
        if content_type not in (_PROTOBUF, _JSON):
            self.stats.reject("unsupported_media_type")
            return _closing(_status_response(415, f"unsupported Content-Type {content_type!r}", _JSON))
        try:
            self._admit()
            # auto_decompress is off (see start): `inflate` undoes Content-Encoding with a bounded output.
            body = inflate(await request.read(), request.headers.get(hdrs.CONTENT_ENCODING, ""), limit)
            if content_type == _PROTOBUF:
                parsed, wire = parse_protobuf(body), body
            else:
                parsed = parse_json(body)
                wire = parsed.SerializeToString()
            await self._accept(wire, parsed)
        except web.HTTPRequestEntityTooLarge:
            self.stats.reject("too_large")
            return _closing(_status_response(413, f"request body exceeds {limit} bytes", content_type))
        except TooLarge as exc:
            self.stats.reject("too_large")
            return _status_response(413, str(exc), content_type)
        except UnsupportedEncoding as exc:
            self.stats.reject("unsupported_media_type")
            return _status_response(415, str(exc), content_type)
        except BadRequest as exc:
            self.stats.reject("malformed")
            return _status_response(400, str(exc), content_type)
        except _Busy as exc:
            self.stats.reject("lag")
            return _status_response(429, str(exc), content_type, retry_after=self._retry_after_s())
        except QueueFull as exc:
            self.stats.reject("backpressure")
            return _status_response(429, f"pipeline is busy, retry later: {exc}", content_type, retry_after=1)
        except (TimeoutError, DeliveryFailed) as exc:
            self.stats.reject("kafka_unavailable")
            return _status_response(503, f"Kafka did not acknowledge: {exc}", content_type, retry_after=2)
        response = ExportTraceServiceResponse()
        if content_type == _JSON:
            return web.Response(text=json_format.MessageToJson(response), content_type=_JSON)
        return web.Response(body=response.SerializeToString(), content_type=_PROTOBUF)

    # -- gRPC -----------------------------------------------------------
    async def _grpc_export(self, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        # Pairs, last one wins; dict() would read a grpc.aio.Metadata as a mapping (first value of a repeated key).
        metadata = {key: value for key, value in (context.invocation_metadata() or ())}  # noqa: C416
        if not self._authorized(metadata.get("authorization")):
            self.stats.reject("unauthenticated")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        try:
            if len(body) > self._settings.max_request_bytes:
                raise TooLarge(f"request of {len(body)} bytes exceeds {self._settings.max_request_bytes}")
            self._admit()
            parsed = parse_protobuf(body)
            await self._accept(body, parsed)
        except _SpanTooLarge as exc:
            self.stats.reject("too_large")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except TooLarge as exc:
            self.stats.reject("too_large")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except BadRequest as exc:
            self.stats.reject("malformed")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except _Busy as exc:
            self.stats.reject("lag")
            await _abort_retryable(context, str(exc), self._retry_after_s())
        except QueueFull as exc:
            self.stats.reject("backpressure")
            await _abort_retryable(context, f"pipeline is busy, retry later: {exc}", 1)
        except (TimeoutError, DeliveryFailed) as exc:
            self.stats.reject("kafka_unavailable")
            await _abort_retryable(context, f"Kafka did not acknowledge: {exc}", 2)
        return ExportTraceServiceResponse().SerializeToString()

    # -- lifecycle ------------------------------------------------------
    def _server_tls(self) -> ssl.SSLContext | None:
        if self._settings.tls_cert_file is None or self._settings.tls_key_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self._settings.tls_cert_file, self._settings.tls_key_file)
        return context

    async def start(self) -> None:
        host = self._settings.listen
        tls = self._server_tls()
        # auto_decompress=False: aiohttp would inflate without bounding the output; `inflate` does.
        self._runner = web.AppRunner(self.http_app(), access_log=None, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, self._settings.http_port, ssl_context=tls)
        await site.start()
        self.http_port = self._runner.addresses[0][
            1
        ]  # (host, port, ...) of the bound socket: the port when 0 was asked

        limit = self._settings.max_request_bytes + 1024
        self._grpc = grpc.aio.server(options=[("grpc.max_receive_message_length", limit)])
        handler = grpc.unary_unary_rpc_method_handler(self._grpc_export)  # raw bytes: we parse, so we choose the status
        self._grpc.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(_SERVICE, {"Export": handler})])
        address = f"{host}:{self._settings.grpc_port}"
        if tls is None:
            self.grpc_port = self._grpc.add_insecure_port(address)
        else:
            assert self._settings.tls_cert_file is not None and self._settings.tls_key_file is not None
            credentials = grpc.ssl_server_credentials(
                [(self._settings.tls_key_file.read_bytes(), self._settings.tls_cert_file.read_bytes())]
            )
            self.grpc_port = self._grpc.add_secure_port(address, credentials)
        await self._grpc.start()
        if self._lag_gate is not None:
            self._lag_gate.start()
        log.info(
            "otlp receiver listening",
            extra={"http_port": self.http_port, "grpc_port": self.grpc_port, "tls": tls is not None},
        )

    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests, flush the producer. Idempotent."""
        if self._grpc is not None:
            await self._grpc.stop(grace=5)
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._lag_gate is not None:
            await asyncio.to_thread(self._lag_gate.stop)
        remaining = await asyncio.to_thread(self._writer.close)
        if remaining:
            log.error("%d records were not acknowledged by Kafka at shutdown", remaining)


def _closing(response: web.Response) -> web.Response:
    """Close the connection after answering: the body was not read, so it cannot carry another request."""
    response.force_close()
    return response


async def _abort_retryable(context: grpc.aio.ServicerContext, message: str, retry_after_s: int) -> None:
    """UNAVAILABLE with a google.rpc.RetryInfo detail, the OTLP/gRPC throttling signal."""
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message)
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromSeconds(retry_after_s)
    status.details.add().Pack(info)
    await context.abort(
        grpc.StatusCode.UNAVAILABLE,
        message,
        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
    )


def _status_response(status: int, message: str, content_type: str, retry_after: int | None = None) -> web.Response:
    """OTLP/HTTP error body: a google.rpc.Status in the request's encoding."""
    code = {
        400: code_pb2.INVALID_ARGUMENT,
        401: code_pb2.UNAUTHENTICATED,
        413: code_pb2.RESOURCE_EXHAUSTED,
        415: code_pb2.INVALID_ARGUMENT,
        429: code_pb2.UNAVAILABLE,
        503: code_pb2.UNAVAILABLE,
    }.get(status, code_pb2.UNKNOWN)
    body = status_pb2.Status(code=code, message=message)
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    if content_type == _PROTOBUF:
        return web.Response(status=status, body=body.SerializeToString(), content_type=_PROTOBUF, headers=headers)
    return web.Response(status=status, text=json_format.MessageToJson(body), content_type=_JSON, headers=headers)
