"""stemrun.worker."""
