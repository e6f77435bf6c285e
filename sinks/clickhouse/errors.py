"""Which ClickHouse failures to retry, which to dead-letter, which stop the worker.

Permanent: the same rows will fail the same way (bad data). Fatal: the
deployment is wrong (missing table or database, bad credentials): fail fast
rather than dead-letter everything. Everything else is transient and retried.
"""

from __future__ import annotations

import re

from clickhouse_connect.driver.exceptions import ClickHouseError, DataError, OperationalError

from processors.core.errors import LlmopsError, PermanentError

__all__ = ["ErrorClass", "classify", "SinkError", "PermanentSinkError", "FatalSinkError"]

# ClickHouse server error codes (src/Common/ErrorCodes.cpp).
_DATA_ERROR_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        130,  # CANNOT_READ_ARRAY_FROM_TEXT
        190,  # SIZES_OF_ARRAYS_DONT_MATCH
        407,  # DECIMAL_OVERFLOW
        444,  # UNKNOWN_PROTOBUF_FORMAT: a record ClickHouse's Protobuf reader refuses
    }
)
_FATAL_CODES = frozenset(
    {
        16,  # NO_SUCH_COLUMN_IN_TABLE
        60,  # UNKNOWN_TABLE
        81,  # UNKNOWN_DATABASE
        164,  # READONLY
        115,  # UNKNOWN_SETTING: the server is older than the settings the sink sends
        452,  # SETTING_CONSTRAINT_VIOLATION: the user's profile forbids a setting the sink sends
        434,  # CANNOT_PARSE_PROTOBUF_SCHEMA: trace_ingest.proto and the server disagree
        435,  # NO_COLUMN_SERIALIZED_TO_REQUIRED_PROTOBUF_FIELD
        436,  # PROTOBUF_BAD_CAST: otlp_ingest columns do not fit the schema
        570,  # DATA_TYPE_INCOMPATIBLE_WITH_PROTOBUF_FIELD
        192,  # UNKNOWN_USER
        193,  # WRONG_PASSWORD
        497,  # ACCESS_DENIED
        516,  # AUTHENTICATION_FAILED
    }
)
_CODE = re.compile(r"Code: (\d+)")


class ErrorClass:
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    FATAL = "fatal"


class SinkError(LlmopsError):
    """Base of the sink's own errors."""


class PermanentSinkError(SinkError, PermanentError):
    """These rows can never be written; dead-letter their records."""


class FatalSinkError(SinkError):
    """The store is misconfigured; stop the worker without acknowledging anything."""


def classify(exc: BaseException) -> str:
    """Sort an exception from an insert into transient, permanent or fatal."""
    if isinstance(exc, (TypeError, ValueError, OverflowError)) and not isinstance(exc, ClickHouseError):
        return ErrorClass.PERMANENT  # the client could not serialize a value
    if isinstance(exc, DataError):
        return ErrorClass.PERMANENT
    if isinstance(exc, OperationalError):
        return ErrorClass.TRANSIENT
    match = _CODE.search(str(exc))
    if match:
        code = int(match.group(1))
        if code in _DATA_ERROR_CODES:
            return ErrorClass.PERMANENT
        if code in _FATAL_CODES:
            return ErrorClass.FATAL
    return ErrorClass.TRANSIENT
