{% from "macros.sql" import otel_traces_select %}
-- Spans whose start time lies outside 2000-01-01 .. 2200-01-01 are left out of otel_traces,
-- as processors/decode.py leaves them out (it records each in ingest_errors): the same
-- window as processors/bounds.py (TIME_MIN_NS, TIME_MAX_NS).
--
-- Before, such a start time was stored wrapped through Int64 (2**63 became 1677-09-21)
-- and every bad span could open its own daily partition of otel_traces. An end time
-- outside the window gives Duration 0, as an end before the start already did.

-- Swaps the view's query in place (same columns as migration 006): inserts never see a missing view.
ALTER TABLE otlp_ingest_to_otel_traces{{ on_cluster }} MODIFY QUERY
{{ otel_traces_select(one_attributes_call=true, time_window=true) }};
