"""Runaway agents: the rules that flag a run while it is still spending, and the findings they give.

Four kinds, each with a threshold in settings (`agents.*`):

- `tool_loop`: one tool called with the same arguments (`spans.args_digest`) at least
  `loop_repeats` times. A tool whose span does not carry its arguments is never a loop: repeated
  use of a tool with different inputs is normal work, and flagging it would page on-call for it.
- `llm_calls`: more than `max_llm_calls` LLM calls in the run.
- `cost`: the run's priced calls cost more than `max_cost_usd`.
- `duration`: the run has lasted longer than `max_duration_s` (newest span end minus first start).

The rules are monotone: adding spans to a run can only cross more thresholds. A finding computed
from part of a run's spans is therefore replaced, never contradicted, by the one computed from all
of them (`agent_anomalies` keeps the row with the most spans per run, kind and subject).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from processors.core.agents.spans import RunSpan, agent_tree
from processors.core.window import NS_PER_S

__all__ = ["FINDING_KINDS", "Finding", "RunawayRules", "findings"]

FINDING_KINDS = ("tool_loop", "llm_calls", "cost", "duration")


@dataclass(frozen=True, slots=True)
class RunawayRules:
    loop_repeats: int = 5
    max_llm_calls: int = 50
    max_cost_usd: Decimal = Decimal("5")
    max_duration_s: float = 900.0


@dataclass(slots=True)  # not frozen: built for every span or run, and a frozen init costs ~8x
class Finding:
    """One `agent_anomalies` row: what crossed which threshold in which run, and what it cost."""

    trace_id: str
    kind: str  # one of FINDING_KINDS
    subject: str  # tool_loop: "<tool> <args digest>"; else ""
    service: str
    root_agent: str
    count: int  # repetitions, LLM calls; 0 for cost and duration
    threshold: str
    first_ns: int  # the repetition's (or run's) first start
    last_ns: int  # its newest end
    input_tokens: int  # of the LLM calls in [first_ns, last_ns]
    output_tokens: int
    cost: Decimal | None
    spans: int  # spans of the run this finding was computed from (the table's version)
    final: bool  # computed when the run closed


def _spent(spans: list[RunSpan], first_ns: int, last_ns: int) -> tuple[int, int, Decimal | None]:
    calls = [s for s in spans if s.role == "llm" and first_ns <= s.start_ns <= last_ns]
    priced = [s.cost for s in calls if s.cost is not None]
    return (
        sum(s.input_tokens for s in calls),
        sum(s.output_tokens for s in calls),
        sum(priced, Decimal(0)) if priced else None,
    )


def findings(trace_id: str, spans: Mapping[str, RunSpan], rules: RunawayRules, final: bool) -> list[Finding]:
    """Every threshold the run's spans cross, in a fixed order (kind, then subject)."""
    if not spans:
        return []
    ordered = sorted(spans.values(), key=RunSpan.order_key)
    n = len(ordered)
    start = ordered[0].start_ns
    end = max(s.end_ns for s in ordered)
    service = next((s.service for s in ordered if s.parent_span_id not in spans), ordered[0].service)
    root_agent = agent_tree(spans, ordered)[1]
    out: list[Finding] = []

    def add(kind: str, subject: str, count: int, threshold: str, first: int, last: int, where: str) -> None:
        tin, tout, cost = _spent(ordered, first, last)
        out.append(
            Finding(
                trace_id, kind, subject, where, root_agent, count, threshold, first, last, tin, tout, cost, n, final
            )
        )

    repeats: dict[tuple[str, str], list[RunSpan]] = {}
    for span in ordered:
        if span.role == "tool" and span.tool_args:
            repeats.setdefault((span.name, span.tool_args), []).append(span)
    for (tool, args), calls in sorted(repeats.items()):
        if len(calls) >= rules.loop_repeats:
            last = max(s.end_ns for s in calls)
            add(
                "tool_loop",
                f"{tool} {args}",
                len(calls),
                str(rules.loop_repeats),
                calls[0].start_ns,
                last,
                calls[0].service,
            )
    llm = sum(s.role == "llm" for s in ordered)
    if llm > rules.max_llm_calls:
        add("llm_calls", "", llm, str(rules.max_llm_calls), start, end, service)
    priced = [s.cost for s in ordered if s.role == "llm" and s.cost is not None]
    if priced and sum(priced, Decimal(0)) > rules.max_cost_usd:
        add("cost", "", 0, str(rules.max_cost_usd), start, end, service)
    if end - start > rules.max_duration_s * NS_PER_S:
        add("duration", "", 0, str(rules.max_duration_s), start, end, service)
    return out


@dataclass(slots=True)
class RunTally:
    """Counters that say, in O(1) per span, whether a run's spans may cross a threshold not yet reported."""

    llm_calls: int = 0
    cost: Decimal = Decimal(0)
    start_ns: int | None = None
    end_ns: int = 0
    loops: dict[tuple[str, str], int] | None = None
    long: bool = False  # the duration threshold was crossed

    def add(self, span: RunSpan, rules: RunawayRules) -> bool:
        """Count `span`; True when a threshold is now crossed (the caller then computes the findings)."""
        crossed = False
        self.start_ns = span.start_ns if self.start_ns is None else min(self.start_ns, span.start_ns)
        self.end_ns = max(self.end_ns, span.end_ns)
        if span.role == "llm":
            self.llm_calls += 1
            crossed |= self.llm_calls == rules.max_llm_calls + 1
            if span.cost is not None:
                before = self.cost
                self.cost += span.cost
                crossed |= before <= rules.max_cost_usd < self.cost
        elif span.role == "tool" and span.tool_args:
            loops = self.loops if self.loops is not None else {}
            self.loops = loops
            key = (span.name, span.tool_args)
            loops[key] = loops.get(key, 0) + 1
            crossed |= loops[key] == rules.loop_repeats
        if not self.long and self.end_ns - self.start_ns > rules.max_duration_s * NS_PER_S:
            self.long = crossed = True
        return crossed
