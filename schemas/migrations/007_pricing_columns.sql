-- Which price layer priced each call, and under what deployment and service tier (issue 20).
-- pricing_entry keeps naming the entry; these say where it came from and what it assumed.
{% call alter_table("llm_calls") %}
    ADD COLUMN IF NOT EXISTS pricing_source LowCardinality(String) DEFAULT '' COMMENT 'user | project | base | empty when unpriced',
    ADD COLUMN IF NOT EXISTS pricing_version LowCardinality(String) DEFAULT '' COMMENT 'base price snapshot in force: genai-prices X.Y.Z or sha256 of an updated file',
    ADD COLUMN IF NOT EXISTS pricing_region LowCardinality(String) DEFAULT '' COMMENT 'deployment key: aws:us-gov, aws:global, azure:eu, gcp:us-central1; empty when the span does not say',
    ADD COLUMN IF NOT EXISTS service_tier LowCardinality(String) DEFAULT '' COMMENT 'flex | priority | batch | scale; empty = standard',
    ADD COLUMN IF NOT EXISTS pricing_assumption LowCardinality(String) DEFAULT '' COMMENT 'what the price assumed because the span did not say it'{% endcall %};
