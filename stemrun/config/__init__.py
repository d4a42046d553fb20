"""stemrun.config."""
