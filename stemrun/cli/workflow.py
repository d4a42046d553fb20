"""Placeholder for the workflow commands (issue 6); replaced by its implementation."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
