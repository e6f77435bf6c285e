-- Cluster variant, step 0: the migration runner's bookkeeping table, replicated to EVERY node
-- (no {shard} in the Keeper path), so a worker on any node sees which migrations were applied.
-- The runner's own CREATE TABLE IF NOT EXISTS schema_migrations then finds this table and keeps it.
-- Apply before the first worker starts. See README.md in this folder.
CREATE TABLE IF NOT EXISTS schema_migrations ON CLUSTER '{cluster}'
(
    version UInt32,
    name String,
    checksum String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/schema_migrations', '{replica}')
ORDER BY version;
