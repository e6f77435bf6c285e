"""Versioned LLM price catalog (catalog.yaml), read with importlib.resources."""
