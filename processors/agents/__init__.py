"""The agent-run stage: trace-keyed agent spans in, `agent_runs` and `agent_anomalies` rows out."""
