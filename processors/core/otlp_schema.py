"""The OTLP trace request as the worker decodes it: span attributes stay serialized.

Why: turning a KeyValue message into Python values costs about a microsecond (a
wrapper per message, a oneof lookup, a new str per key and value), and that was
the largest part of the worker's Python time. Most span attributes repeat
exactly from span to span (operation, provider, model, prompt, agent), so the
worker keeps a span's attributes as each KeyValue's wire bytes and decodes each
distinct one once (processors/otlp_values.KeyValueCache).

The schema is OTLP's own, copied from opentelemetry-proto's descriptors with one
change: `Span.attributes` (field 9) is `repeated bytes`, whose wire format is
the same as a repeated message's. Events, links and resources keep their types.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = ["RawAttributesRequest"]

_PREFIX = "llmops.raw_attributes"


def _copy_with_raw_span_attributes(pool: descriptor_pool.DescriptorPool) -> None:
    for module in (common_pb2, resource_pb2, trace_pb2, trace_service_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        # Its own package and file names, so the copy never clashes with the real OTLP types.
        proto.name = f"{_PREFIX}/{proto.name}"
        proto.package = f"{_PREFIX}.{proto.package}"
        proto.dependency[:] = [f"{_PREFIX}/{name}" for name in proto.dependency]
        del proto.service[:]  # only messages are needed
        for message in proto.message_type:
            _retarget(message)
            if module is trace_pb2 and message.name == "Span":
                (attributes,) = [f for f in message.field if f.name == "attributes"]
                attributes.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                attributes.ClearField("type_name")
        pool.Add(proto)


def _retarget(message: descriptor_pb2.DescriptorProto) -> None:
    """Point message-typed fields at the copies."""
    for field in message.field:
        if field.type_name.startswith(".opentelemetry."):
            field.type_name = f".{_PREFIX}{field.type_name}"
    for nested in message.nested_type:
        _retarget(nested)


def _build() -> type[Message]:
    pool = descriptor_pool.DescriptorPool()
    _copy_with_raw_span_attributes(pool)
    name = f"{_PREFIX}.{trace_service_pb2.ExportTraceServiceRequest.DESCRIPTOR.full_name}"
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


# ExportTraceServiceRequest, except that each span's `attributes` is a list of KeyValue wire bytes.
RawAttributesRequest: type[Message] = _build()
