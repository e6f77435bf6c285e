"""Where and how a call was served, as far as its span says: deployment region and service tier.

Prices differ by deployment (Bedrock in-region and geo cross-region profiles
cost more than `global.` ones; GovCloud and Azure data zones carry their own
prices) and by service tier (OpenAI flex / priority / batch). This module only
reads them from the model id and the OTel attributes that carry them; it
prices nothing.

The deployment key is `<cloud>:<where>`:

- `aws:<profile>` for a Bedrock inference-profile prefix (`us.`, `eu.`, `apac.`,
  `au.`, `jp.`, `ca.`, `in.`, `us-gov.`, `global.`), else `aws:<region>` from a
  LiteLLM id (`bedrock/<region>/...`), `server.address`
  (`bedrock-runtime.<region>.amazonaws.com`) or `cloud.region`;
- `azure:<zone>` for a LiteLLM-style data-zone id (`azure/eu/gpt-4o`), else
  `azure:<region>` from `cloud.region`;
- `gcp:<location>` from a Vertex resource name (`projects/p/locations/L/...`),
  a regional endpoint (`us-central1-aiplatform.googleapis.com`) or `cloud.region`;
- `""` when nothing says.
"""

from __future__ import annotations

import re
from typing import Any, Final

from processors.core.bounds import MAX_LABEL_CHARS

__all__ = ["deployment_of", "is_located", "service_tier_of", "tier_said", "TIER_ATTRIBUTES"]

_BEDROCK_PROFILE_RE: Final = re.compile(r"^(us-gov|global|us|eu|apac|au|jp|ca|in)\.")
_BEDROCK_PATH_RE: Final = re.compile(r"^(?:bedrock/)?(?:converse/)?([a-z]{2}(?:-gov)?-[a-z]+-\d)/")
_BEDROCK_HOST_RE: Final = re.compile(r"^bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com$")
_AZURE_ZONE_RE: Final = re.compile(r"^azure(?:_ai)?/(eu|us|global)/")
_VERTEX_LOCATION_RE: Final = re.compile(r"(?:^|/)locations/([a-z0-9-]+)/")
_VERTEX_HOST_RE: Final = re.compile(r"^([a-z0-9-]+)-aiplatform\.googleapis\.com$")

# Response first: the tier that served the call, not the one asked for ("auto").
TIER_ATTRIBUTES: Final = (
    "openai.response.service_tier",
    "gen_ai.openai.response.service_tier",
    "openai.request.service_tier",
    "gen_ai.openai.request.service_tier",
)
_TIER_PROVIDERS: Final = frozenset({"openai"})


def _attr(span_attrs: dict[str, Any], resource: dict[str, Any], key: str) -> str:
    value = span_attrs.get(key)
    if value is None:
        value = resource.get(key)
    # A longer value is no host or region (processors/core/bounds.py): the deployment stays unknown.
    return value.strip().lower() if isinstance(value, str) and len(value) <= MAX_LABEL_CHARS else ""


def is_located(provider: str) -> bool:
    """Whether `deployment_of` can say anything for this provider (the others are priced wherever they ran)."""
    return provider == "aws.bedrock" or provider.startswith(("azure", "gcp."))


def deployment_of(provider: str, model: str, span_attrs: dict[str, Any], resource: dict[str, Any]) -> str:
    """The deployment key of a call (see the module docstring); `provider` is normalised."""
    low = model.strip().lower()
    if provider == "aws.bedrock":
        match = _BEDROCK_PROFILE_RE.match(low.rsplit("/", 1)[-1])
        if match:
            return f"aws:{match.group(1)}"
        path = _BEDROCK_PATH_RE.match(low)  # LiteLLM ids: bedrock/us-gov-west-1/anthropic....
        if path:
            return f"aws:{path.group(1)}"
        bedrock_host = _BEDROCK_HOST_RE.match(_attr(span_attrs, resource, "server.address"))
        if bedrock_host:
            return f"aws:{bedrock_host.group(1)}"
        region = _attr(span_attrs, resource, "cloud.region")
        return f"aws:{region}" if region else ""
    if provider.startswith("azure"):
        match = _AZURE_ZONE_RE.match(low)
        if match:
            return f"azure:{match.group(1)}"
        region = _attr(span_attrs, resource, "cloud.region")
        return f"azure:{region}" if region else ""
    if provider.startswith("gcp."):
        match = _VERTEX_LOCATION_RE.search(low)
        if match:
            return f"gcp:{match.group(1)}"
        host = _attr(span_attrs, resource, "server.address")
        if host == "aiplatform.googleapis.com":
            return "gcp:global"
        vertex = _VERTEX_HOST_RE.match(host)
        if vertex:
            return f"gcp:{vertex.group(1)}"
        region = _attr(span_attrs, resource, "cloud.region")
        return f"gcp:{region}" if region else ""
    return ""


def service_tier_of(provider: str, span_attrs: dict[str, Any]) -> str:
    """OpenAI's service tier of the call ('' when not said, or 'auto'/'default': the standard price)."""
    if provider not in _TIER_PROVIDERS:
        return ""
    for key in TIER_ATTRIBUTES:
        value = span_attrs.get(key)
        if isinstance(value, str) and value and len(value) <= MAX_LABEL_CHARS:
            tier = value.strip().lower()
            return "" if tier in ("auto", "default", "standard") else tier
    return ""


def tier_said(span_attrs: dict[str, Any]) -> bool:
    return any(isinstance(span_attrs.get(key), str) and span_attrs.get(key) for key in TIER_ATTRIBUTES)
