"""The pure core: OTLP decode, normalisation, enrichers, windows, sketches, drift statistics, row and table types.

Nothing here does network or database I/O and nothing here imports the rest of the project;
the adapters (collector, sinks, Kafka in) and the application (llmops, the faust runtime)
import it. tests/test_import_layers.py enforces the rule (contracts in pyproject.toml).
"""
