"""Usage partials: any arrival order, batch split, late arrival or restart gives exact window totals."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.core.records import LLMCall
from processors.core.usage import USAGE_COLUMNS, USAGE_KEY_COLUMNS, usage_columns, usage_partials, usage_rows

T0 = 1_764_000_000 * 10**9

call_strategy = st.builds(
    LLMCall,
    ts_ns=st.integers(T0, T0 + 5 * 60 * 10**9),
    trace_id=st.just("t"),
    span_id=st.just("s"),
    service=st.sampled_from(["a", "b"]),
    team=st.sampled_from(["", "search"]),
    request_model=st.sampled_from(["", "gpt-4o", "claude-sonnet-4"]),
    response_model=st.sampled_from(["", "gpt-4o-2024-08-06", "claude-sonnet-4", "mystery"]),
    prompt_version=st.sampled_from(["", "v1", "v2"]),
    input_tokens=st.integers(0, 10**6),
    output_tokens=st.integers(0, 10**5),
    cache_read_tokens=st.integers(0, 1000),
    reasoning_tokens=st.integers(0, 100),
    cost=st.one_of(st.none(), st.integers(0, 10**15).map(lambda n: Decimal(n).scaleb(-12))),
    reported_cost=st.one_of(st.none(), st.decimals(min_value=0, max_value=100, places=6, allow_nan=False)),
    status=st.sampled_from(["ok", "error"]),
)


def _key(call: LLMCall) -> tuple:
    return (
        (call.ts_ns // 60_000_000_000) * 60,
        call.service,
        call.environment,
        call.team,
        call.provider,
        call.response_model or call.request_model,
        call.request_model or call.response_model,
        call.operation,
        call.agent,
        call.prompt_name,
        call.prompt_version,
    )


def _reference(calls: list[LLMCall]) -> dict[tuple, tuple]:
    """Per-call sums computed independently of processors.core.usage."""
    out: dict[tuple, list] = defaultdict(lambda: [0, 0, 0, 0, 0, 0, Decimal(0), Decimal(0), 0, 0])
    for c in calls:
        acc = out[_key(c)]
        acc[0] += 1
        acc[1] += c.status == "error"
        acc[2] += c.input_tokens
        acc[3] += c.output_tokens
        acc[4] += c.cost is None
        acc[5] += c.cache_read_tokens
        acc[6] += c.cost if c.cost is not None else 0
        acc[7] += c.reported_cost if c.reported_cost is not None else 0
        acc[8] += c.input_tokens if c.cost is None else 0
        acc[9] += c.output_tokens if c.cost is None else 0
    return {k: tuple(v) for k, v in out.items()}


def _sum_rows(rows_list: list[tuple[dict, list]]) -> dict[tuple, tuple]:
    """What `SELECT ... sum(...) GROUP BY window, key` over the stored partial rows returns."""
    out: dict[tuple, list] = defaultdict(lambda: [0, 0, 0, 0, 0, 0, Decimal(0), Decimal(0), 0, 0])
    for data, names in rows_list:
        assert names == list(USAGE_COLUMNS)
        for i in range(len(data["calls"])):
            acc = out[tuple(data[k][i] for k in USAGE_KEY_COLUMNS)]
            for j, name in enumerate(
                [
                    "calls",
                    "errors",
                    "input_tokens",
                    "output_tokens",
                    "unpriced_calls",
                    "cache_read_tokens",
                    "cost",
                    "reported_cost",
                    "unpriced_input_tokens",
                    "unpriced_output_tokens",
                ]
            ):
                acc[j] += data[name][i]
    return {k: tuple(v) for k, v in out.items()}


@settings(max_examples=150, deadline=None)
@given(calls=st.lists(call_strategy, max_size=60), data=st.data())
def test_any_order_and_batch_split_gives_exact_totals(calls: list[LLMCall], data: st.DataObject) -> None:
    order = data.draw(st.permutations(range(len(calls))))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(calls)), max_size=8)))
    arrived = [calls[i] for i in order]
    batches = [arrived[a:b] for a, b in zip([0, *cuts], [*cuts, len(arrived)], strict=True)]
    stored = [usage_columns(batch) for batch in batches if batch]
    assert _sum_rows(stored) == _reference(calls)


@settings(max_examples=100, deadline=None)
@given(calls=st.lists(call_strategy, min_size=1, max_size=40), data=st.data())
def test_restart_with_offset_fence_never_loses_or_double_counts(calls: list[LLMCall], data: st.DataObject) -> None:
    """Records (one call each, offset = index) are processed in batches; a crash after storing a batch
    but before committing the offset replays from the committed offset, and the sink's fence
    (max stored _ingest_offset) skips what is already stored."""
    n = len(calls)
    stored: list[tuple[dict, list]] = []
    fence = -1  # max(_ingest_offset) in the table
    committed = 0  # next offset the consumer reads after a restart
    position = 0
    while position < n:
        size = data.draw(st.integers(1, n - position))
        batch = list(range(position, position + size))
        fresh = [i for i in batch if i > fence]
        if fresh:
            stored.append(usage_columns([calls[i] for i in fresh]))
            fence = max(fresh)
        if data.draw(st.booleans()):  # crash before commit: replay from the committed offset
            position = committed = data.draw(st.integers(committed, position))
        else:
            position = committed = position + size
    assert _sum_rows(stored) == _reference(calls)


def test_partial_rows_by_hand() -> None:
    a = LLMCall(
        ts_ns=T0 + 1,
        trace_id="t",
        span_id="1",
        service="s",
        response_model="m",
        input_tokens=10,
        output_tokens=2,
        cost=Decimal("0.000000000001"),
    )
    b = LLMCall(
        ts_ns=T0 + 59 * 10**9,
        trace_id="t",
        span_id="2",
        service="s",
        response_model="m",
        input_tokens=5,
        status="error",
        cost=None,
    )
    c = LLMCall(
        ts_ns=T0 + 61 * 10**9,
        trace_id="t",
        span_id="3",
        service="s",
        response_model="m",
        input_tokens=1,
        cost=Decimal("0.5"),
    )
    window = (T0 // 60_000_000_000) * 60
    partials = usage_partials([a, b, c])
    assert sorted(k.window_start for k in partials) == [window, window + 60]
    first = next(p for k, p in partials.items() if k.window_start == window)
    assert (first.calls, first.errors, first.input_tokens, first.unpriced_calls, first.priced_calls) == (2, 1, 15, 1, 1)
    assert (first.unpriced_input_tokens, first.unpriced_output_tokens) == (5, 0)
    assert first.cost == Decimal("0.000000000001")
    rows = usage_rows([a, b, c])
    assert rows.table == "llm_usage_1m" and len(rows) == 2 and rows.column_names == list(USAGE_COLUMNS)
