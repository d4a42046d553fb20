"""stemrun.schedules."""
