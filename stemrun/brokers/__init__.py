"""stemrun.brokers."""
