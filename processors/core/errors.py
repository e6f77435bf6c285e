"""One exception tree for the whole project, grouped by what the caller can do.

Every error the project raises derives from `LlmopsError`. `RetryableError`: the same
operation may succeed later (a full queue, a broker or store that is away), so retry
with backoff or tell the client to. `PermanentError`: the same input fails the same
way (a malformed record, a refused query, a bad config file), so never retry it;
dead-letter or report it. Errors that are neither (a misconfigured deployment that
stops a worker, a user-facing refusal) derive from `LlmopsError` directly.
As the OpenTelemetry Collector's consumererror and Vector's retry logic split them.
"""

from __future__ import annotations

__all__ = ["LlmopsError", "RetryableError", "PermanentError"]


class LlmopsError(Exception):
    """Base of every error the project raises."""


class RetryableError(LlmopsError):
    """Transient: the same operation may succeed later."""


class PermanentError(LlmopsError):
    """The same input fails the same way: do not retry it."""
