"""stemrun.backends."""
