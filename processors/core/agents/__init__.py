"""Agent runs: spans of one trace assembled into a run, and the runaway rules checked on it."""
