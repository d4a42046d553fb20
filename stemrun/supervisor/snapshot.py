"""Frozen copies of each validated stem.yaml, which the children load instead of the live file.

A child reads its config when it starts, which may be a second after the supervisor validated
the file; an edit in between (even an invalid one) must not reach it. So every child is started
on a copy of the exact text that was validated, written beside stem.yaml (relative paths and
task imports resolve against the same directory) and removed once no child uses it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("stemrun.supervisor")


class Snapshots:
    """The copies this supervisor wrote; see `take`, `prune` and `clear`."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self._written: set[Path] = set()

    def take(self, text: str, generation: int) -> Path:
        """A copy of `text` for `generation`; the live file itself if the copy cannot be written."""
        path = self.config_path
        copy = path.with_name(f".{path.stem}.up{os.getpid()}-g{generation}{path.suffix}")
        try:
            temp = copy.with_name(copy.name + ".tmp")
            temp.write_text(text, encoding="utf-8")
            temp.replace(copy)
        except OSError as exc:
            log.warning(
                "cannot write %s (%s): children load %s directly, so an edit saved while one "
                "starts reaches it unvalidated",
                copy,
                exc,
                path,
            )
            return path
        self._written.add(copy)
        return copy

    def prune(self, in_use: Iterable[Path]) -> None:
        """Remove the copies no child uses any more."""
        for copy in self._written - set(in_use):
            self._remove(copy)

    def clear(self) -> None:
        """Remove every copy (at exit)."""
        for copy in list(self._written):
            self._remove(copy)

    def _remove(self, copy: Path) -> None:
        self._written.discard(copy)
        try:
            copy.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove %s: %s", copy, exc)
