"""The worker's decode reads span attributes from their wire bytes (processors/core/otlp_schema.py) through a
KeyValueCache. The reference is what the full OTLP parse gives (attributes_dict over KeyValue messages)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from processors.core.bounds import MAX_VECTOR_LEN, OverLimit
from processors.core.decode import decode_request, parse_record, parse_request
from processors.core.normalize import LLM_MARKER_KEYS
from processors.core.otlp_values import KeyValueCache, attributes_dict
from processors.core.pipeline import SourceRecord, may_be_llm_call, parse_records
from tests.otlp_values_build import any_value_of, set_any_value

START = 1_764_000_000_000_000_000
MARKERS = sorted(LLM_MARKER_KEYS)

scalars = st.one_of(
    st.text(max_size=12),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.binary(max_size=6),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=4), scalars, max_size=3))
keys = st.one_of(st.sampled_from([*MARKERS, "gen_ai.request.model", "http.route", "k"]), st.text(max_size=10))


def _request(spans: list[list[tuple[str, Any]]]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for n, attributes in enumerate(spans, start=1):
        span = scope.spans.add(
            trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"), name="op", start_time_unix_nano=START
        )
        for key, value in attributes:
            set_any_value(span.attributes.add(key=key).value, value)
    return request


def _value_first(key: str, value: str) -> bytes:
    """A KeyValue encoded with its value (field 2) before its key (field 1): valid protobuf, unusual order."""
    any_value = AnyValue(string_value=value).SerializeToString()
    name = key.encode()
    return b"\x12" + bytes([len(any_value)]) + any_value + b"\x0a" + bytes([len(name)]) + name


@settings(max_examples=150, deadline=None)
@given(spans=st.lists(st.lists(st.tuples(keys, values), max_size=6), min_size=1, max_size=5))
def test_decoded_attributes_equal_the_full_parse_and_no_llm_span_is_skipped(spans: list[list[tuple[str, Any]]]) -> None:
    wire = _request(spans).SerializeToString()
    full = [attributes_dict(s.attributes) for s in parse_request(wire).resource_spans[0].scope_spans[0].spans]

    everything = decode_request(wire)
    assert [view.attributes for view in everything.spans] == full  # repeated keys: last wins, as in attributes_dict
    assert [view.attributes for view in decode_request(wire).spans] == full  # again, now from the cache

    kept = {view.span_id for view in decode_request(wire, keep=may_be_llm_call).spans}
    for view, attributes in zip(everything.spans, full, strict=True):
        assert (view.span_id in kept) == bool(LLM_MARKER_KEYS & attributes.keys())


def test_a_marker_key_encoded_after_its_value_is_still_found() -> None:
    request = parse_record(_request([[("http.route", "/a")]]).SerializeToString())
    request.resource_spans[0].scope_spans[0].spans[0].attributes.append(_value_first("gen_ai.operation.name", "chat"))
    wire = request.SerializeToString()

    (span,) = decode_request(wire, keep=may_be_llm_call).spans
    assert span.attributes == {"http.route": "/a", "gen_ai.operation.name": "chat"}
    assert span.attributes == attributes_dict(parse_request(wire).resource_spans[0].scope_spans[0].spans[0].attributes)


def test_a_list_from_the_cache_is_a_fresh_list_for_every_span() -> None:
    cache = KeyValueCache()
    encoded = [KeyValue(key="gen_ai.response.finish_reasons", value=any_value_of(["stop"])).SerializeToString()]
    first = cache.attributes(encoded)
    first["gen_ai.response.finish_reasons"].append("changed")
    assert cache.attributes(encoded) == {"gen_ai.response.finish_reasons": ["stop"]}


def test_the_cache_stays_within_its_bounds() -> None:
    cache = KeyValueCache(max_entries=4, max_encoded_bytes=40)
    for n in range(50):
        assert cache.attributes([KeyValue(key="tokens", value=any_value_of(n)).SerializeToString()]) == {"tokens": n}
        assert len(cache) <= 4
    long_text = KeyValue(key="gen_ai.output.messages", value=any_value_of("x" * 100)).SerializeToString()
    before = len(cache)
    assert cache.attributes([long_text]) == {"gen_ai.output.messages": "x" * 100}
    assert len(cache) == before  # long encodings are decoded, not remembered
    nested = KeyValue(key="m", value=any_value_of({"a": 1})).SerializeToString()
    assert cache.attributes([nested]) == {"m": {"a": 1}} and len(cache) == before  # nor mutable maps


def test_a_malformed_attribute_makes_the_record_poison() -> None:
    """The record's parse does not look inside span attributes, so the pass in parse_records must."""
    request = parse_record(_request([[("gen_ai.operation.name", "chat")]]).SerializeToString())
    request.resource_spans[0].scope_spans[0].spans[0].attributes.append(b"\x0a\x40truncated")
    bad = SourceRecord("otlp_spans", 0, 7, request.SerializeToString(), "t/0")
    good = SourceRecord("otlp_spans", 0, 8, _request([[("k", 1)]]).SerializeToString(), "t/0")

    parsed, poison = parse_records([bad, good])
    assert [p.record.offset for p in parsed] == [8]
    assert [p.record.offset for p in poison] == [7] and "not an OTLP" in poison[0].reason


def test_arrays_and_maps_longer_than_any_reader_accepts_are_not_decoded() -> None:
    """An array or kvlist of more than MAX_VECTOR_LEN values in all (nested ones counted) is not turned into
    Python objects (~0.5 µs each): both decoders give `OverLimit`, which readers refuse as bytes; one at the
    limit is decoded."""
    at_limit = [0.5] * MAX_VECTOR_LEN
    nested_at_limit = [[1.0] * (MAX_VECTOR_LEN // 2 - 1), [2.0] * (MAX_VECTOR_LEN // 2 - 1)]
    cases = {
        "vector": ([0.5] * (MAX_VECTOR_LEN + 1), OverLimit()),
        "nested": ([[1.0] * 10_000, [2.0] * 10_000], OverLimit()),
        "map": ({f"k{i}": i for i in range(MAX_VECTOR_LEN + 1)}, OverLimit()),
        "at_limit": (at_limit, at_limit),
        "nested_at_limit": (nested_at_limit, nested_at_limit),
    }
    for key, (value, expected) in cases.items():
        kv = KeyValue(key=key, value=any_value_of(value))
        for decoded in (attributes_dict([kv]), KeyValueCache().attributes([kv.SerializeToString()])):
            assert decoded == {key: expected} and type(decoded[key]) is type(expected), key
