"""stemrun.cli."""
