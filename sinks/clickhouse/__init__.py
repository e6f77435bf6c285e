"""sinks/clickhouse"""
