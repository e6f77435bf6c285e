"""The `llm_evaluation_1m` signal: evaluation results per 1-minute event-time window, evaluator and call dimensions.

Why a signal of its own: a score drop per prompt version is read over hours or days, and
`llm_evaluations` holds one row per result. This table holds per window and key (evaluator, service,
model, prompt name, prompt version) additive partials that merge into any range's totals:
`evaluations`, `scored` (results with a score), `errors` (results with an error type), `score_sum`,
`score_min`/`score_max` (NULL without a score), `labels` (label -> results with it; a result
without a label is not counted there), and the score distribution as mergeable sketches.

Scores may be 0 or negative (a pass/fail judge scores 0 and 1; some score -1..1), and the sketch of
processors/core/sketch.py (the one `llm_latency_1m` stores) buckets positive values only. So, as a
DDSketch keeps a negative store and a zero count beside its positive store: `sketch` holds the
positive scores, `negative_sketch` the magnitudes of the negative ones, `zero_scores` the zeros,
all with the gamma in `sketch_gamma`. `score_quantiles` reads them: the value at rank
floor(q * (n - 1)) of all n scores (numpy's method "lower"), within the sketch's relative accuracy
of it (a zero exactly).

The signal folds `Evaluation`s (`input = "evaluations"`, processors/core/signal.py); event time is
`Evaluation.ts_ns`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from processors.core.evaluations import Evaluation
from processors.core.signal import ColumnSpec, TableSpec
from processors.core.sketch import DEFAULT_RELATIVE_ACCURACY, GroupedSketches, Sketch, bucket_values, gamma_for
from processors.core.tables import TableRows
from processors.core.window import MINUTE, Window

__all__ = [
    "EVALUATION_SCORES",
    "EVALUATION_SCORES_TABLE",
    "EvaluationKey",
    "EvaluationScoresSignal",
    "ScoresInput",
    "score_quantiles",
]

_NAME = "LowCardinality(String)"
_KEY_COLUMNS: Final = ("evaluator", "service", "model", "prompt_name", "prompt_version")

EVALUATION_SCORES_TABLE: Final = TableSpec(
    "llm_evaluation_1m",
    (
        ColumnSpec("window_start", "key", "DateTime('UTC')"),
        *(ColumnSpec(name, "key", _NAME) for name in _KEY_COLUMNS),
        ColumnSpec("evaluations", "sum", "UInt64"),
        ColumnSpec("scored", "sum", "UInt64"),
        ColumnSpec("errors", "sum", "UInt64"),
        ColumnSpec("score_sum", "sum", "Float64"),
        ColumnSpec("score_min", "min", "Nullable(Float64)"),
        ColumnSpec("score_max", "max", "Nullable(Float64)"),
        ColumnSpec("labels", "sum_map", "Map(String, UInt64)"),
        ColumnSpec("zero_scores", "sum", "UInt64"),
        ColumnSpec("sketch_gamma", "any", "Float64"),
        ColumnSpec("sketch", "sum_map", "Map(Int32, UInt64)"),
        ColumnSpec("negative_sketch", "sum_map", "Map(Int32, UInt64)"),
    ),
    retention_days=400,  # as the other 1-minute tables (schemas/retention/ttl.sql)
)


class EvaluationKey(NamedTuple):
    """One row's key: window start (Unix seconds, UTC), the evaluator and the evaluated call's dimensions."""

    window_start: int
    evaluator: str
    service: str
    model: str
    prompt_name: str
    prompt_version: str


@dataclass(slots=True)
class _Partial:
    evaluations: int = 0
    scored: int = 0
    errors: int = 0
    score_sum: float = 0.0
    score_min: float | None = None
    score_max: float | None = None
    zero_scores: int = 0
    labels: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class ScoresInput:
    """The accumulator: one partial per key, and every nonzero score with its key's index, for the sketches."""

    keys: dict[EvaluationKey, int] = field(default_factory=dict)
    partials: list[_Partial] = field(default_factory=list)
    score_keys: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


class EvaluationScoresSignal:
    """The `llm_evaluation_1m` signal (processors/core/signal.py), folding evaluation results."""

    table: Final = EVALUATION_SCORES_TABLE
    input: Final[Literal["evaluations"]] = "evaluations"

    def __init__(self, window: Window = MINUTE, relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY) -> None:
        self.window = window
        self.relative_accuracy = relative_accuracy

    def new(self) -> ScoresInput:
        return ScoresInput()

    def fold(self, acc: ScoresInput, calls: Sequence[Evaluation]) -> ScoresInput:
        start_s = self.window.start_s
        keys, partials = acc.keys, acc.partials
        for result in calls:
            key = EvaluationKey(
                start_s(result.ts_ns),
                result.evaluator,
                result.service,
                result.model,
                result.prompt_name,
                result.prompt_version,
            )
            index = keys.get(key)
            if index is None:
                index = keys[key] = len(partials)
                partials.append(_Partial())
            partial = partials[index]
            partial.evaluations += 1
            if result.error_type:
                partial.errors += 1
            if result.score_label:
                partial.labels[result.score_label] = partial.labels.get(result.score_label, 0) + 1
            score = result.score_value
            if score is None:
                continue
            partial.scored += 1
            partial.score_sum += score
            partial.score_min = score if partial.score_min is None else min(partial.score_min, score)
            partial.score_max = score if partial.score_max is None else max(partial.score_max, score)
            if score == 0.0:
                partial.zero_scores += 1
            else:
                acc.score_keys.append(index)
                acc.scores.append(score)
        return acc

    def rows(self, acc: ScoresInput) -> TableRows:
        n = len(acc.partials)
        if n == 0:  # most batches carry no results: no numpy passes for them
            return TableRows(self.table.name, list(self.table.column_names))
        ids = np.asarray(acc.score_keys, dtype=np.int64)
        scores = np.asarray(acc.scores, dtype=np.float64)
        negative = scores < 0.0
        positive_maps = GroupedSketches.from_batch(ids[~negative], scores[~negative], n, self.relative_accuracy)
        negative_maps = GroupedSketches.from_batch(ids[negative], -scores[negative], n, self.relative_accuracy)
        gamma = gamma_for(self.relative_accuracy)
        partials = acc.partials
        columns = [
            *(list(column) for column in zip(*acc.keys, strict=True)),
            [p.evaluations for p in partials],
            [p.scored for p in partials],
            [p.errors for p in partials],
            [p.score_sum for p in partials],
            [p.score_min for p in partials],
            [p.score_max for p in partials],
            [dict(p.labels) for p in partials],
            [p.zero_scores for p in partials],
            [gamma] * n,
            positive_maps.to_maps(),
            negative_maps.to_maps(),
        ]
        return TableRows(self.table.name, list(self.table.column_names), columns)


EVALUATION_SCORES: Final = EvaluationScoresSignal()


def score_quantiles(
    sketch: Mapping[int, int],
    negative_sketch: Mapping[int, int],
    zero_scores: int,
    qs: ArrayLike,
    gamma: float = gamma_for(DEFAULT_RELATIVE_ACCURACY),
) -> NDArray[np.float64]:
    """Quantiles of merged score sketches (sumMap of `sketch`, of `negative_sketch`, sum of `zero_scores`).

    The estimate for q stands for the value at rank floor(q * (n - 1)) of all n scores (numpy's "lower"):
    a negative score's bucket, 0, or a positive score's bucket, each within the relative accuracy of the
    true value. NaN when there are no scores.
    """
    q = np.atleast_1d(np.asarray(qs, dtype=np.float64))
    if q.ndim != 1 or not bool(np.all((q >= 0.0) & (q <= 1.0))):
        raise ValueError("quantiles must be numbers in [0, 1]")
    positive = Sketch.from_map(dict(sketch), gamma)
    negative = Sketch.from_map(dict(negative_sketch), gamma)
    n_negative, n_positive = negative.bucketed_count, positive.bucketed_count
    n = n_negative + zero_scores + n_positive
    out = np.full(q.size, np.nan)
    if n == 0:
        return out
    for i, rank in enumerate(np.floor(q * (n - 1.0)).astype(np.int64).tolist()):
        if rank < n_negative:  # ascending: the largest magnitudes come first
            out[i] = -_at_rank(negative, n_negative - 1 - rank)
        elif rank < n_negative + zero_scores:
            out[i] = 0.0
        else:
            out[i] = _at_rank(positive, rank - n_negative - zero_scores)
    return out


def _at_rank(sketch: Sketch, rank: int) -> float:
    """The representative of the bucket holding the `rank`-th smallest (0-based) bucketed value."""
    cum = np.cumsum(sketch.counts, dtype=np.uint64)
    index = int(np.searchsorted(cum, np.uint64(rank), side="right"))
    value = float(bucket_values(sketch.keys[min(index, cum.size - 1)], sketch.gamma))
    return value if math.isfinite(value) else math.nan
