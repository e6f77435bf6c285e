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

`AttributeAtSpanDepth` parses one span attribute four messages deep, where it sits
in a request: the parser limits nesting per parse, so an attribute checked on its
own must be checked at its depth in the record (processors/otlp_values.py). Its
wrappers are groups, whose tags do not depend on the attribute's length.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = [
    "RAW_PACKAGE_PREFIX",
    "RawAttributesRequest",
    "AttributeAtSpanDepth",
    "AT_SPAN_DEPTH_HEAD",
    "AT_SPAN_DEPTH_TAIL",
]

_PREFIX = "llmops.raw_attributes"
# What the copy's full names start with (its messages are `<this><OTLP full name>`).
RAW_PACKAGE_PREFIX = f"{_PREFIX}."


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


def _add_attribute_at_span_depth(pool: descriptor_pool.DescriptorPool) -> None:
    """AttributeAtSpanDepth { group G = 1 { group G = 1 { group G = 1 { repeated KeyValue attributes = 9 } } } }."""
    field_type = descriptor_pb2.FieldDescriptorProto
    common = f"{_PREFIX}/{common_pb2.DESCRIPTOR.name}"
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"{_PREFIX}/at_span_depth.proto", package=_PREFIX, syntax="proto2", dependency=[common]
    )
    inner = descriptor_pb2.DescriptorProto(name="G")
    inner.field.add(name="attributes", number=9, label=field_type.LABEL_REPEATED, type=field_type.TYPE_MESSAGE,
                    type_name=f".{_PREFIX}.{common_pb2.KeyValue.DESCRIPTOR.full_name}")  # fmt: skip
    message = descriptor_pb2.DescriptorProto(name="AttributeAtSpanDepth")
    parent, path = message, f".{_PREFIX}.AttributeAtSpanDepth"
    for level in range(3):
        path += ".G"
        parent.field.add(
            name="g", number=1, label=field_type.LABEL_OPTIONAL, type=field_type.TYPE_GROUP, type_name=path
        )
        nested = inner if level == 2 else descriptor_pb2.DescriptorProto(name="G")
        parent.nested_type.append(nested)
        parent = parent.nested_type[-1]
    proto.message_type.append(message)
    pool.Add(proto)


def _build() -> tuple[type[Message], type[Message]]:
    pool = descriptor_pool.DescriptorPool()
    _copy_with_raw_span_attributes(pool)
    _add_attribute_at_span_depth(pool)
    name = f"{_PREFIX}.{trace_service_pb2.ExportTraceServiceRequest.DESCRIPTOR.full_name}"
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName(name)),
            message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PREFIX}.AttributeAtSpanDepth")))  # fmt: skip


# ExportTraceServiceRequest, except that each span's `attributes` is a list of KeyValue wire bytes.
# AttributeAtSpanDepth: AT_SPAN_DEPTH_HEAD + length + KeyValue bytes + AT_SPAN_DEPTH_TAIL is one span
# attribute as deep as in a request (read it back as `.g.g.g.attributes[0]`).
RawAttributesRequest, AttributeAtSpanDepth = _build()
AT_SPAN_DEPTH_HEAD = b"\x0b\x0b\x0b\x4a"  # three group starts (field 1), then field 9's tag
AT_SPAN_DEPTH_TAIL = b"\x0c\x0c\x0c"  # three group ends
