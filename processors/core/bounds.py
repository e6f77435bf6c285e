"""Bounds on every value the worker reads from a span, checked in time independent of the value's size.

Why its own module: a span is user input. Before these checks one attribute could
stop the worker (``start_time_unix_nano = 2**63`` or a token count of ``"1e30"``
overflowed int64/UInt64 further down and raised), stall it (``int(Decimal("1e1000000"))``
builds a million-digit integer: ~38 s of CPU for 10 bytes), or make ClickHouse refuse a
whole record's rows. Normalise, TTFT and the drift signals read through these functions,
so the rules are in one place and a test can check that no numeric parser ever sees more
than `MAX_NUMBER_CHARS` characters.

Each reader returns the checked value or raises `BadValue` with a one-line reason;
the caller decides what a bad value costs (processors/README.md, "Bad values").
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from processors.core.errors import PermanentError

__all__ = [
    "BadValue",
    "MAX_TOKENS",
    "MAX_NUMBER_CHARS",
    "MAX_LABEL_CHARS",
    "MAX_VECTOR_LEN",
    "OverLimit",
    "MAX_JSON_CHARS",
    "MAX_COST_USD",
    "MAX_TTFT_S",
    "MAX_SCORE",
    "MAX_EXPLANATION_CHARS",
    "TIME_MIN_NS",
    "TIME_MAX_NS",
    "token_count",
    "number",
    "amount",
    "time_in_range",
    "label",
    "show",
]

# Token counts: the largest context windows are ~10**7 tokens; 10**12 leaves room for any
# aggregate instrumentations report per span and keeps sums of 10**7 calls under 2**64
# (llm_calls/llm_usage_1m are UInt64) and their cost well inside Decimal(38, 12).
MAX_TOKENS: Final = 10**12
# Numeric text longer than this is refused before any parser sees it: "123456789012.000000"
# and "1.5e3" fit, and Decimal/float on 40 characters costs microseconds whatever they say.
MAX_NUMBER_CHARS: Final = 40
# Names that become dimensions (LowCardinality columns, drift keys, Grafana legends):
# model, provider, prompt, agent, team, service, environment, finish reason, conversation id,
# user id.
MAX_LABEL_CHARS: Final = 256
# Embedding vectors: the largest common embedding models have 3-12k dimensions.
MAX_VECTOR_LEN: Final = 16_384
# JSON attribute values (gen_ai.output.messages, vectors as JSON): a Kafka record is <= ~1 MB.
MAX_JSON_CHARS: Final = 1_048_576
# A provider-reported cost per call, USD: Decimal(38, 12) holds < 10**26, sums of 10**7 calls stay inside.
MAX_COST_USD: Final = Decimal(10**12)
# Seconds to first token: a day is already nonsense for a single call.
MAX_TTFT_S: Final = 86_400.0
# Evaluation scores (Float64): any scale an evaluator uses (0..1, 1..10, log-probabilities) fits; a
# score is not money, and its window sums are floats (llm_evaluation_1m's score_sum).
MAX_SCORE: Final = 1e12
# An evaluation's explanation (a judge's reasoning, free text): longer text is cut, with a reason.
MAX_EXPLANATION_CHARS: Final = 8192
# Event-time window: 2000-01-01T00:00:00Z .. 2200-01-01T00:00:00Z in Unix ns. Inside Int64,
# UInt64 and DateTime64(9) (which ends in 2262), and wide enough for any real clock.
TIME_MIN_NS: Final = 946_684_800 * 10**9
TIME_MAX_NS: Final = 7_258_118_400 * 10**9

# A plain ASCII decimal number: sign, digits with an optional fraction, an optional short exponent.
_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,9})?")
_TOKEN_DIGITS: Final = len(str(MAX_TOKENS))
_PICO: Final = Decimal("1e-12")


class BadValue(PermanentError, ValueError):
    """A span value outside its bound, or not of a usable type; the message says which and why."""


class OverLimit(bytes):
    """What the decoder gives for an array or kvlist of more than MAX_VECTOR_LEN values in all.

    No reader accepts one, and decoding its values would cost about half a microsecond each. It is a
    (empty) bytes object, so every reader refuses it as it refuses bytes: a token count given as one
    is an `ingest_errors` row, a vector given as one is no vector.
    """

    def __repr__(self) -> str:
        return f"<array or kvlist of more than {MAX_VECTOR_LEN} values>"


def show(value: Any, limit: int = 40) -> str:
    """A short, safe rendering of a value for an error message (never the whole of a huge value)."""
    if isinstance(value, str):
        text = value if len(value) <= limit else value[:limit] + f"…({len(value)} chars)"
        return repr(text)
    if isinstance(value, OverLimit):
        return repr(value)
    if isinstance(value, (bytes, bytearray)):
        return f"bytes[{len(value)}]"
    if isinstance(value, list):
        return f"array[{len(value)}]"
    if isinstance(value, dict):
        return f"kvlist[{len(value)}]"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**18:
        return f"{'-' if value < 0 else ''}~2**{value.bit_length() - 1}"
    return repr(value)


def _decimal_text(text: str) -> Decimal:
    """A finite Decimal from short numeric text; the only place numeric strings are parsed."""
    if len(text) > MAX_NUMBER_CHARS:  # checked before anything reads the text
        raise BadValue(f"numeric text longer than {MAX_NUMBER_CHARS} characters")
    text = text.strip()
    if _NUMBER.fullmatch(text) is None:
        raise BadValue("not a decimal number")
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # cannot happen after the regex; kept as a guard
        raise BadValue("not a decimal number") from exc


def token_count(value: Any) -> int:
    """A token count: an integer 0..MAX_TOKENS given as int, integral float or numeric text."""
    if type(value) is int:
        if 0 <= value <= MAX_TOKENS:
            return value
        raise BadValue(f"token count {show(value)} outside 0..10**12")
    if type(value) is float:
        if math.isfinite(value) and value.is_integer() and 0 <= value <= MAX_TOKENS:
            return int(value)
        raise BadValue(f"token count {show(value)} is not an integer in 0..10**12")
    if isinstance(value, str):
        number = _decimal_text(value)
        # adjusted() is the exponent of the leading digit: checked before int() ever runs.
        if number.is_zero():
            return 0
        if number < 0 or number.adjusted() >= _TOKEN_DIGITS or number != number.to_integral_value():
            raise BadValue(f"token count {show(value)} is not an integer in 0..10**12")
        result = int(number)
        if result > MAX_TOKENS:
            raise BadValue(f"token count {show(value)} outside 0..10**12")
        return result
    raise BadValue(f"token count of type {type(value).__name__} ({show(value)})")


def number(value: Any, low: float, high: float, what: str) -> float:
    """A finite float in [low, high] from an int, a float or numeric text."""
    if isinstance(value, bool):
        raise BadValue(f"{what} is a bool")
    if isinstance(value, str):
        parsed: float = float(_decimal_text(value)) if value.strip() else math.nan
    elif isinstance(value, int):
        if not low <= value <= high:  # compared as int: no float conversion of a huge int
            raise BadValue(f"{what} {show(value)} outside {low:g}..{high:g}")
        parsed = float(value)
    elif isinstance(value, float):
        parsed = value
    else:
        raise BadValue(f"{what} of type {type(value).__name__} ({show(value)})")
    if not (math.isfinite(parsed) and low <= parsed <= high):
        raise BadValue(f"{what} {show(value)} outside {low:g}..{high:g}")
    return parsed


def amount(value: Any) -> Decimal:
    """A money amount 0..MAX_COST_USD, exact: numeric text or int as written, a float by its shortest repr."""
    if isinstance(value, bool):
        raise BadValue("cost is a bool")
    if isinstance(value, str):
        result = _decimal_text(value)
    elif isinstance(value, int):
        if not 0 <= value <= MAX_COST_USD:
            raise BadValue(f"cost {show(value)} outside 0..10**12")
        result = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise BadValue(f"cost {show(value)} is not finite")
        result = _decimal_text(repr(value))
    else:
        raise BadValue(f"cost of type {type(value).__name__} ({show(value)})")
    if result.is_zero():
        return Decimal(0)
    if result < 0 or result.adjusted() > 12 or result > MAX_COST_USD:
        raise BadValue(f"cost {show(value)} outside 0..10**12")
    # The column is Decimal(38, 12): digits beyond 12 places cannot be stored.
    exponent = result.as_tuple().exponent  # an int: result is finite here
    return result.quantize(_PICO) if isinstance(exponent, int) and exponent < -12 else result


def time_in_range(ns: int) -> bool:
    """Whether a Unix-ns timestamp lies in the event-time window (2000-01-01 .. 2200-01-01)."""
    return TIME_MIN_NS <= ns < TIME_MAX_NS


def label(value: Any, what: str) -> str:
    """A dimension value as text: a string, or a scalar's text, of at most MAX_LABEL_CHARS characters."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, int):  # bool included; OTLP ints are int64, JSON ones may be any size
        if value.bit_length() > 128:
            raise BadValue(f"{what} {show(value)} is not a name")
        text = str(value)
    elif isinstance(value, float):
        text = repr(value)
    else:
        raise BadValue(f"{what} of type {type(value).__name__} ({show(value)})")
    if len(text) > MAX_LABEL_CHARS:
        raise BadValue(f"{what} longer than {MAX_LABEL_CHARS} characters ({len(text)})")
    return text
