"""Logging setup: text or JSON lines, with task fields on every task event."""

from __future__ import annotations

import json
import logging
import sys
import time

#: `extra=` keys that task event lines carry, in display order.
TASK_FIELDS = ("task", "task_id", "attempt", "queue", "worker")


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        fields = " ".join(
            f"{key}={getattr(record, key)}" for key in TASK_FIELDS if hasattr(record, key)
        )
        line = f"{stamp} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        if fields:
            line = f"{line} {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in TASK_FIELDS:
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Send stemrun's logs to stderr in the chosen format (replacing earlier setup)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("stemrun")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
