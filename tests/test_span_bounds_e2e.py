"""The issue's poison spans end to end: receiver -> Tansu -> the real worker process -> chDB.

Before processors/core/bounds.py the worker exited on the first of these and again on every restart.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import requests

from tests.conftest import wait_until
from tests.test_span_bounds import GOOD, _request

pytestmark = pytest.mark.integration


def test_poison_spans_among_good_ones_leave_the_worker_up_and_the_good_calls_stored(make_stack) -> None:
    stack = make_stack(partitions=1)
    stack.start_worker()
    stack.start_receiver()
    service = "poison-e2e"
    spans: list[dict[str, Any]] = [{} for _ in range(12)]
    spans[1] = {"start": 2**63}  # OverflowError in the latency rows: the worker's crash loop
    spans[3] = {
        "attributes": {**GOOD, "gen_ai.usage.input_tokens": "1e30"}
    }  # UInt64 overflow: the record went to the DLQ
    spans[5] = {"attributes": {**GOOD, "gen_ai.usage.input_tokens": "1e1000000"}}  # ~38 s of CPU
    spans[7] = {"end": 2**64 - 1}
    spans[9] = {"attributes": {**GOOD, "gen_ai.usage.output_tokens": math.inf}}
    spans[11] = {"events": [("gen_ai.content.completion.chunk", 2**64 - 1)]}  # stored, TTFT NULL
    request = _request(service, spans)
    ids = [span.span_id.hex() for span in request.resource_spans[0].scope_spans[0].spans]
    url = f"{stack.http_url}/v1/traces"
    response = requests.post(
        url, data=request.SerializeToString(), headers={"Content-Type": "application/x-protobuf"}, timeout=10
    )
    assert response.status_code == 200
    # A good record after the poison one: the partition keeps moving.
    after = _request("after-poison-e2e", [{} for _ in range(3)])
    response = requests.post(
        url, data=after.SerializeToString(), headers={"Content-Type": "application/x-protobuf"}, timeout=10
    )
    assert response.status_code == 200

    wait_until(
        lambda: (
            stack.count("SELECT count() FROM llm_calls WHERE service = 'after-poison-e2e'") == 3
            or stack.worker.poll() is not None
        ),
        90,
        "the record after the poison one",
    )
    assert stack.worker.poll() is None, "the worker exited"
    wait_until(
        lambda: stack.count(f"SELECT count() FROM ingest_errors WHERE service = '{service}'") == 6, 60, "ingest errors"
    )
    # Each table of a batch is its own insert: wait for the spans and the calls too before reading them.
    wait_until(
        lambda: stack.count(f"SELECT count() FROM otel_traces WHERE ServiceName = '{service}'") >= 11, 60, "spans"
    )
    wait_until(lambda: stack.count(f"SELECT count() FROM llm_calls WHERE service = '{service}'") >= 7, 60, "calls")

    client = stack.reader()
    try:
        calls = dict(client.query(f"SELECT span_id, ttft_ms FROM llm_calls WHERE service = '{service}'").result_rows)
        assert sorted(calls) == sorted(ids[i] for i in (0, 2, 4, 6, 8, 10, 11))
        assert calls[ids[11]] is None
        assert client.query(f"SELECT count() FROM otel_traces WHERE ServiceName = '{service}'").result_rows[0][0] == 11
        errors = client.query(
            f"SELECT span_id, reason, dead_lettered FROM ingest_errors WHERE service = '{service}' ORDER BY span_id"
        ).result_rows
        assert [row[0] for row in errors] == [ids[i] for i in (1, 3, 5, 7, 9, 11)]
        assert not any(row[2] for row in errors)
        assert (
            "gen_ai.usage.input_tokens" in errors[1][1]
            and "'1e1000000'" in errors[2][1]
            and "end_time_unix_nano" in errors[3][1]
        )
        assert client.query("SELECT count() FROM ingest_errors WHERE dead_lettered").result_rows[0][0] == 0
    finally:
        client.close()
