{% from "macros.sql" import delivery_columns %}
-- Drift results and change events (contract tables, see ARCHITECTURE.md).
-- Unqualified names: the runner sets the database. Each statement ends with a line-final terminator.
--
-- llm_drift: one row per drift window, key and statistic, compared against its reference.
-- Key: service x model (response model) x prompt_name x prompt_version.
-- statistic: ks | wasserstein_norm | psi | chi2 | jensen_shannon | hotelling_t2 |
--   mahalanobis_centroid_distance | mmd2_rbf | cosine_centroid_distance | drifted_component_share.
-- p_value: NULL for pure effect sizes. threshold: the significance level when p_value is set,
--   else the effect-size threshold. drifted: the decided flag after multiple-testing control.
-- reference: what the window was compared with (e.g. 'trailing 24h', 'pinned ...', 'prompt v11').
-- Dashboards read the newest window per key ("currently drifted keys"), alert rules the
-- last closed window per key.
{% call table("llm_drift", shard_by="cityHash64(service, model, prompt_name, prompt_version)") %}
(
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    service LowCardinality(String),
    model LowCardinality(String),
    prompt_name LowCardinality(String),
    prompt_version LowCardinality(String),
    signal LowCardinality(String),
    statistic LowCardinality(String),
    value Float64,
    p_value Nullable(Float64),
    threshold Float64,
    drifted Bool,
    n_ref UInt32,
    n_cur UInt32,
    reference String,
    {{ delivery_columns() }}
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (service, model, prompt_name, prompt_version, window_start, signal, statistic)
SETTINGS non_replicated_deduplication_window = 1000{% endcall %};

-- change_events: the first sighting of a new value per service and kind, which drives Grafana annotations.
-- kind: prompt_version | response_model | embedding_model. old_value is '' at the first sighting ever.
-- Key columns say where the change happened (prompt_name for prompt versions, model for the
-- response model the prompt ran on), and '' where they do not apply.
{% call table("change_events", shard_by="cityHash64(service, kind)") %}
(
    ts DateTime64(9, 'UTC'),
    service LowCardinality(String),
    kind LowCardinality(String),
    old_value String,
    new_value String,
    model LowCardinality(String),
    prompt_name LowCardinality(String),
    trace_id String,
    span_id String,
    {{ delivery_columns() }}
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (service, kind, ts)
SETTINGS non_replicated_deduplication_window = 1000{% endcall %};
