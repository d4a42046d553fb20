"""stem.yaml: schema, `${VAR}` interpolation, the STEM_* overlay and the frozen Config.

The loader (and yaml, jsonschema and croniter with it) is imported on first use of
`load_config` or `config_from_mapping` (PEP 562): code that only needs `stemrun.config.model`
never pays for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from stemrun.config.duration import parse_duration
from stemrun.config.schema import SCHEMA_PATH, load_schema

if TYPE_CHECKING:
    from stemrun.config.loader import config_from_mapping, load_config

STARTER_PATH = Path(__file__).with_name("starter.yaml")  # the file `stemrun init` writes

__all__ = [
    "SCHEMA_PATH",
    "STARTER_PATH",
    "config_from_mapping",
    "load_config",
    "load_schema",
    "parse_duration",
]

# Type checkers read the imports above instead: were __getattr__ visible to them, mypy would
# accept any misspelt name as Any.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """The loader's names, imported on first use. Raises AttributeError for other names."""
        if name in ("config_from_mapping", "load_config"):
            from stemrun.config import loader

            return getattr(loader, name)
        raise AttributeError(f"module 'stemrun.config' has no attribute {name!r}")
