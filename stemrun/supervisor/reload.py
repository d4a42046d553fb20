"""Noticing edits: watchfiles on stem.yaml (and task code), debounced, validated before use."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import watchfiles

from stemrun.config import load_config
from stemrun.config.model import Config
from stemrun.errors import ConfigError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("stemrun.supervisor")

DEBOUNCE_S = 0.2  # editors save in several writes (truncate, write, rename): wait for quiet
SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "site-packages"})


@dataclass(slots=True)
class Debouncer:
    """A reload is due once no change has been seen for `quiet_s`; pure, driven by times given."""

    quiet_s: float = DEBOUNCE_S
    due_at: float | None = None
    code: bool = False  # a code (.py) change is among the pending ones

    def changed(self, now: float, *, code: bool = False) -> None:
        """Note a change seen at `now`."""
        self.due_at = now + self.quiet_s
        self.code = self.code or code

    def take(self, now: float) -> bool | None:
        """None when nothing is due yet; else whether a code change is part of it (and reset)."""
        if self.due_at is None or now < self.due_at:
            return None
        code, self.due_at, self.code = self.code, None, False
        return code


class ReloadFailures:
    """`stem_config_reload_failures_total`: reloads refused since this supervisor started.

    A prometheus_client collector that the supervisor's metrics endpoint serves beside the
    store-wide series (docs/observability.md); the count lives in this process only.
    """

    NAME = "stem_config_reload_failures"
    HELP = "Reloads refused: an invalid file, stores that do not open, handlers that do not import."

    def __init__(self) -> None:
        self.count = 0

    def describe(self) -> list[Metric]:
        """The family, for `?name[]=` filters."""
        return self.collect()

    def collect(self) -> list[Metric]:
        """The counter now."""
        from prometheus_client.core import CounterMetricFamily

        return [CounterMetricFamily(self.NAME, self.HELP, value=self.count)]


def read_validated(path: Path) -> tuple[Config, str] | None:
    """The config at `path` and the exact text it came from; None if it changed meanwhile.

    Raises ConfigError when the file is invalid or unreadable.
    """
    try:
        before = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read config: {exc}"]) from exc
    config = load_config(path)
    try:
        after = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return (config, before) if after == before else None


def watched_dirs(config_path: Path, code: bool) -> list[tuple[Path, bool]]:
    """(directory, recursive) pairs to watch.

    The config directory itself is watched flat: stores such as `.stem/stem.db` live below it
    and write constantly. With code reload, each visible subdirectory is watched recursively.
    """
    root = config_path.parent
    dirs = [(root, False)]
    if code:
        dirs += [
            (child, True)
            for child in sorted(root.iterdir())
            if child.is_dir() and not child.name.startswith(".") and child.name not in SKIPPED_DIRS
        ]
    return dirs


class Watcher:
    """A daemon thread calling `on_change(code)` for edits of stem.yaml (and .py with code)."""

    def __init__(self, config_path: Path, *, code: bool, on_change: Callable[[bool], None]) -> None:
        self._config = config_path.resolve()
        self._code = code
        self._on_change = on_change
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start watching; one thread per (directory, recursive) pair."""
        for directory, recursive in watched_dirs(self._config, self._code):
            thread = threading.Thread(
                target=self._watch, args=(directory, recursive), name="stemrun-watch", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop watching (threads notice within watchfiles' step)."""
        self._stop.set()

    def _watch(self, directory: Path, recursive: bool) -> None:
        changes = watchfiles.watch(
            directory,
            watch_filter=None,
            debounce=1600,
            step=50,
            stop_event=self._stop,
            recursive=recursive,
            raise_interrupt=False,
        )
        for batch in changes:
            kinds = [self._kind(Path(path)) for _, path in batch]
            if "config" in kinds or "code" in kinds:
                self._on_change("code" in kinds)

    def _kind(self, path: Path) -> str | None:
        if path.resolve() == self._config:
            return "config"
        if self._code and path.suffix == ".py" and "__pycache__" not in path.parts:
            return "code"
        return None
