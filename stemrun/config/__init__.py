"""stem.yaml: schema, `${VAR}` interpolation, the STEM_* overlay and the frozen Config."""

from __future__ import annotations

from pathlib import Path

from stemrun.config.duration import parse_duration
from stemrun.config.loader import config_from_mapping, load_config
from stemrun.config.schema import SCHEMA_PATH, load_schema

STARTER_PATH = Path(__file__).with_name("starter.yaml")  # the file `stemrun init` writes

__all__ = [
    "SCHEMA_PATH",
    "STARTER_PATH",
    "config_from_mapping",
    "load_config",
    "load_schema",
    "parse_duration",
]
