"""The drift stage as the faust agent drives it (stage.py) and its settings (config.py);
the statistics are in processors.core.drift."""
