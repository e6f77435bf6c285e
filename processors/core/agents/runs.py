"""Agent runs on the stream: a trace's spans in, one `agent_runs` row out when the run is over.

A pure state machine the agent-run stage feeds (no I/O, the clock injected). The stage routes
spans by trace id to a keyed topic, so every span of a trace arrives through one source
(partition), in any order and split over any number of records. Per source:

- the **watermark** is the newest span end seen, capped at the wall clock, minus `lateness_s`;
  after `idle_close_s` without records the wall clock minus the lateness advances it, so a quiet
  source still closes its runs;
- a run **closes** when the watermark passes its newest span end plus its inactivity gap: `gap_s`
  for a run with an agent, tool or step span (an agent may wait minutes on a tool), `calls_gap_s`
  for a trace of LLM calls only (a request's calls follow each other within seconds; holding them
  for the agents' gap would fill memory at high volume); its row is then built from its spans,
  deduplicated by span id, so the row depends on the set of spans and not on their order or split;
- **restarts**: `committable(source)` is the lowest offset of a record holding a span of a run
  still open. The stage acknowledges records up to it only after the closed runs' rows are
  written, so a restart replays every record of every open run. A replay also rebuilds part of
  runs closed before the crash; their rows carry `spans` as the table's version
  (ReplacingMergeTree), and since the rows of a run are computed from subsets of one span set,
  the complete row (most spans) is the one kept: no span counted twice, none lost.

Memory is bounded: at most `max_open_runs` open runs (the least recently active is closed early,
marked `truncated`, counted) and `max_spans_per_run` spans per run (further spans of that run are
counted in `spans_over_limit` and left out; the row is marked `truncated`).
A span of a run closed in this process (remembered for the last `max_open_runs` runs) is late:
counted and left out, as the lateness setting promises.

Runaway findings (`runaway.py`) are checked as spans arrive: a finding is emitted the first time
its threshold is crossed and again, final, when the run closes (same key, more spans: replaces).
"""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from processors.core.agents.runaway import Finding, RunawayRules, RunTally, findings
from processors.core.agents.spans import RunSpan, agent_tree
from processors.core.window import NS_PER_S

__all__ = ["AgentRun", "RunAssembler", "RunSettings", "run_of"]

_AGENTIC: Final = frozenset(("agent", "tool", "chain"))


@dataclass(frozen=True, slots=True)
class RunSettings:
    gap_s: float = 120.0
    calls_gap_s: float = 10.0  # the gap of a run without agent, tool or step spans (LLM calls only)
    lateness_s: float = 10.0
    idle_close_s: float = 300.0
    max_open_runs: int = 50_000
    max_spans_per_run: int = 2_000
    rules: RunawayRules = field(default_factory=RunawayRules)


@dataclass(slots=True)  # not frozen: built for every span or run, and a frozen init costs ~8x
class AgentRun:
    """One `agent_runs` row (columns `AGENT_RUN_COLUMNS` in `rows.py`)."""

    trace_id: str
    service: str
    root_agent: str
    user_id: str  # the first (in span order) of the run's LLM calls that names one
    conversation_id: str
    start_ns: int
    end_ns: int
    spans: int
    agent_invocations: int
    llm_calls: int
    tool_calls: int
    tool_calls_by_name: dict[str, int]
    mcp_tool_calls: int
    input_tokens: int
    output_tokens: int
    cost: Decimal | None  # sum over priced calls; None when no call was priced
    unpriced_calls: int
    errors: int
    models: int
    agent_depth: int
    truncated: bool

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def run_of(trace_id: str, spans: dict[str, RunSpan], truncated: bool = False) -> AgentRun:
    """The row of a run from its spans (any order; one per span id)."""
    ordered = sorted(spans.values(), key=RunSpan.order_key) if len(spans) > 1 else list(spans.values())
    top = next((s for s in ordered if s.parent_span_id not in spans), ordered[0])
    llm = [s for s in ordered if s.role == "llm"]
    priced = [s.cost for s in llm if s.cost is not None]
    tools = dict(Counter(s.name for s in ordered if s.role == "tool"))
    depth, root_agent = agent_tree(spans, ordered)
    return AgentRun(
        trace_id=trace_id,
        service=top.service,
        root_agent=root_agent,
        user_id=next((s.user_id for s in llm if s.user_id), ""),
        conversation_id=next((s.conversation_id for s in llm if s.conversation_id), ""),
        start_ns=min(s.start_ns for s in ordered),
        end_ns=max(s.end_ns for s in ordered),
        spans=len(ordered),
        agent_invocations=sum(s.role == "agent" for s in ordered),
        llm_calls=len(llm),
        tool_calls=sum(tools.values()),
        tool_calls_by_name=tools,
        mcp_tool_calls=sum(s.mcp for s in ordered if s.role == "tool"),
        input_tokens=sum(s.input_tokens for s in llm),
        output_tokens=sum(s.output_tokens for s in llm),
        cost=sum(priced, Decimal(0)) if priced else None,
        unpriced_calls=len(llm) - len(priced),
        errors=sum(s.error for s in ordered),
        models=len({s.name for s in llm}),
        agent_depth=depth,
        truncated=truncated,
    )


@dataclass(slots=True)
class _OpenRun:
    trace_id: str
    source: str
    first_offset: int
    last_end_ns: int = 0
    agentic: bool = False  # holds an agent, tool or step span: closes after `gap_s`, else after `calls_gap_s`
    spans: dict[str, RunSpan] = field(default_factory=dict)
    reported: set[tuple[str, str]] = field(default_factory=set)  # findings already emitted while open
    tally: RunTally = field(default_factory=RunTally)
    over_limit: int = 0


@dataclass(slots=True)
class _Source:
    newest_end_ns: int = 0
    watermark_ns: int = 0
    last_arrival_ns: int = 0
    # Min-heaps with lazy deletion (an entry is stale once its run closed or its value moved): when each open
    # run of the source is due to close, and the offsets of their first records. Both keep `close` and
    # `committable` logarithmic in the number of open runs, which high-volume traffic makes large.
    due: list[tuple[int, str]] = field(default_factory=list)
    firsts: list[tuple[int, str]] = field(default_factory=list)


@dataclass(slots=True)
class Closed:
    """What `add` and `close` produce for the sink: finished runs and runaway findings."""

    runs: list[AgentRun] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    # trace id -> (source, offset of the run's first record) of every run above: where its rows came from.
    origins: dict[str, tuple[str, int]] = field(default_factory=dict)

    def extend(self, other: Closed) -> None:
        self.runs.extend(other.runs)
        self.findings.extend(other.findings)
        self.origins.update(other.origins)


class RunAssembler:
    """Open runs per trace; see the module docstring for when a run closes and what a restart replays."""

    def __init__(self, settings: RunSettings | None = None) -> None:
        self.settings = settings or RunSettings()
        self._gap_ns = int(self.settings.gap_s * NS_PER_S)
        self._calls_gap_ns = int(self.settings.calls_gap_s * NS_PER_S)
        self._open: OrderedDict[str, _OpenRun] = OrderedDict()  # least recently active first
        self._closed: OrderedDict[str, None] = OrderedDict()  # recently closed trace ids (late spans)
        self._sources: dict[str, _Source] = {}
        self.late_spans = 0
        self.evicted_runs = 0
        self.spans_over_limit = 0
        self.duplicate_spans = 0

    @property
    def open_runs(self) -> int:
        return len(self._open)

    def add(self, source: str, offset: int, spans: Iterable[RunSpan], now_ns: int) -> Closed:
        """Spans of one record (`offset` in `source`), read at wall time `now_ns`."""
        out = Closed()
        state = self._sources.setdefault(source, _Source())
        state.last_arrival_ns = now_ns
        limit = self.settings.max_spans_per_run
        for span in spans:
            if span.trace_id in self._closed:
                self.late_spans += 1
                continue
            run = self._open.get(span.trace_id)
            if run is None:
                if len(self._open) >= self.settings.max_open_runs:
                    self.evicted_runs += 1
                    _, oldest = self._open.popitem(last=False)
                    self._finish(oldest, out, truncated=True)
                run = self._open[span.trace_id] = _OpenRun(span.trace_id, source, offset)
                heapq.heappush(state.firsts, (offset, span.trace_id))
            else:
                self._open.move_to_end(span.trace_id)
                if offset < run.first_offset:
                    run.first_offset = offset
                    heapq.heappush(self._sources[run.source].firsts, (offset, span.trace_id))
            known = run.spans.get(span.span_id)
            if known is not None:
                self.duplicate_spans += 1
                if span.order_key() >= known.order_key():
                    continue
            elif len(run.spans) >= limit:
                run.over_limit += 1
                self.spans_over_limit += 1
                continue
            run.spans[span.span_id] = span
            end = span.end_ns
            # A run's close deadline moves only with its newest end or its kind; its heap entry is pushed
            # then (a new run's first span always moves it from 0), so one live entry per run.
            moved = end > run.last_end_ns
            if moved:
                run.last_end_ns = end
            if not run.agentic and span.role in _AGENTIC:
                run.agentic = moved = True
            if moved:
                heapq.heappush(self._sources[run.source].due, (self._due_ns(run), run.trace_id))
            if end > state.newest_end_ns:
                state.newest_end_ns = end
            if known is None and run.tally.add(span, self.settings.rules):
                for finding in findings(run.trace_id, run.spans, self.settings.rules, final=False):
                    key = (finding.kind, finding.subject)
                    if key not in run.reported:
                        run.reported.add(key)
                        out.findings.append(finding)
                        out.origins[run.trace_id] = (run.source, run.first_offset)
        return out

    def close(self, now_ns: int) -> Closed:
        """Close every run its source's watermark has passed by the inactivity gap."""
        out = Closed()
        lateness = int(self.settings.lateness_s * NS_PER_S)
        idle = int(self.settings.idle_close_s * NS_PER_S)
        for state in self._sources.values():
            mark = min(state.newest_end_ns, now_ns) - lateness
            if now_ns - state.last_arrival_ns >= idle:
                mark = max(mark, now_ns - lateness)
            state.watermark_ns = max(state.watermark_ns, mark)
        for name, state in self._sources.items():
            while state.due and state.due[0][0] < state.watermark_ns:
                deadline, trace_id = heapq.heappop(state.due)
                run = self._open.get(trace_id)
                if run is None or self._due_ns(run) != deadline:
                    continue  # stale: closed already, or due later (a newer entry holds its deadline)
                del self._open[trace_id]
                self._finish(run, out, truncated=run.over_limit > 0)
            self._compact(name, state)
        return out

    def _due_ns(self, run: _OpenRun) -> int:
        """When the run is over: its newest span end plus its gap (event time)."""
        return run.last_end_ns + (self._gap_ns if run.agentic else self._calls_gap_ns)

    def _compact(self, name: str, state: _Source) -> None:
        """Rebuild a source's heaps once stale entries outnumber live ones (amortised O(1) per span)."""
        if len(state.due) + len(state.firsts) <= 8 * len(self._open) + 128:
            return
        mine = [run for run in self._open.values() if run.source == name]
        state.due = [(self._due_ns(run), run.trace_id) for run in mine]
        state.firsts = [(run.first_offset, run.trace_id) for run in mine]
        heapq.heapify(state.due)
        heapq.heapify(state.firsts)

    def close_all(self) -> Closed:
        """Close every open run now, over the spans it has (a stage that stops). Its commits stay where
        `committable` put them, so a broker that keeps the records replays these runs whole later."""
        out = Closed()
        while self._open:
            _, run = self._open.popitem(last=False)
            self._finish(run, out, truncated=run.over_limit > 0)
        return out

    def committable(self, source: str, next_offset: int) -> int:
        """The offset `source` may be committed at: its lowest record holding a span of an open run,
        else `next_offset` (the one after the newest record read)."""
        state = self._sources.get(source)
        if state is None:
            return next_offset
        firsts = state.firsts
        while firsts:
            offset, trace_id = firsts[0]
            run = self._open.get(trace_id)
            if run is not None and run.source == source and run.first_offset == offset:
                return min(offset, next_offset)
            heapq.heappop(firsts)  # stale: the run closed, or an earlier record of it came later
        return next_offset

    def drop_source(self, source: str) -> int:
        """Forget the open runs of a source this process no longer reads (a rebalance moved it away): the
        next owner replays their records from the offset `committable` gave. Returns how many were open."""
        dropped = [trace_id for trace_id, run in self._open.items() if run.source == source]
        for trace_id in dropped:
            del self._open[trace_id]
        self._sources.pop(source, None)
        return len(dropped)

    def _finish(self, run: _OpenRun, out: Closed, truncated: bool) -> None:
        self._closed[run.trace_id] = None
        while len(self._closed) > self.settings.max_open_runs:
            self._closed.popitem(last=False)
        if not run.spans:
            return
        out.runs.append(run_of(run.trace_id, run.spans, truncated=truncated))
        out.origins[run.trace_id] = (run.source, run.first_offset)
        # A run of one span crossed every threshold it crosses when that span was added (`RunTally`): with
        # none reported there is none to report (most runs at high volume are one LLM call).
        if run.reported or len(run.spans) > 1:
            out.findings.extend(findings(run.trace_id, run.spans, self.settings.rules, final=True))
