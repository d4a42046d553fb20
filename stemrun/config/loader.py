"""Load stem.yaml: parse, interpolate, overlay STEM_*, validate, check, build the Config.

Every problem found is collected and raised at once as a ConfigError whose lines read
`FILE:LINE:COL: yaml.path: message`, sorted by position.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from stemrun.config import semantic
from stemrun.config.build import build_config
from stemrun.config.coerce import coerce
from stemrun.config.insecure import insecure_tls, literal_secrets
from stemrun.config.interpolate import interpolate
from stemrun.config.locate import Document, Locations, YamlSyntaxError, parse_yaml
from stemrun.config.model import Config
from stemrun.config.overlay import Overlay, apply_overlay
from stemrun.config.problem import Problem, YamlPath, format_path
from stemrun.config.schema import schema_problems
from stemrun.config.tls_files import tls_file_problems
from stemrun.errors import ConfigError

DEFAULT_CONFIG_FILE = "stem.yaml"


def config_file(path: str | Path | None, env: Mapping[str, str]) -> Path:
    """The file to load: `path`, else `$STEM_CONFIG`, else `./stem.yaml`."""
    if path is not None:
        return Path(path)
    return Path(env.get("STEM_CONFIG") or DEFAULT_CONFIG_FILE)


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        message = f"{file}: cannot read config: {reason} (create one with `stemrun init`)"
        raise ConfigError([message]) from exc


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    check_files: bool = False,
) -> Config:
    """Load and validate a stem.yaml (default `$STEM_CONFIG`, else `./stem.yaml`).

    With `check_files`, the files the tls section names must exist and be usable by OpenSSL
    (what `stemrun validate` asks for; other commands find out when they connect).

    Raises ConfigError listing every problem, or when the file cannot be read or parsed.
    """
    env = os.environ if env is None else env
    file = config_file(path, env)
    text = _read(file)
    try:
        document = parse_yaml(text)
    except YamlSyntaxError as exc:
        where = f"{file}:{exc.mark[0]}:{exc.mark[1]}" if exc.mark else str(file)
        raise ConfigError([f"{where}: {exc.message}"]) from exc
    absolute = file.absolute()
    return _validated(
        document, str(file), env, path=absolute, root_dir=absolute.parent, check_files=check_files
    )


def config_from_mapping(
    data: Mapping[str, Any],
    *,
    root_dir: Path,
    env: Mapping[str, str] | None = None,
    source: str = "<config>",
) -> Config:
    """Validate already-parsed stem.yaml data (for code and tests); problems carry no line:col.

    Raises ConfigError listing every problem.
    """
    env = os.environ if env is None else env
    document = Document(_plain(data))
    return _validated(document, source, env, path=None, root_dir=Path(root_dir).absolute())


def _plain(value: Any) -> Any:
    """Mappings and sequences as dicts and lists, so the pipeline can walk and change them."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _validated(
    document: Document,
    source: str,
    env: Mapping[str, str],
    *,
    path: Path | None,
    root_dir: Path,
    check_files: bool = False,
) -> Config:
    interpolation = interpolate(document.data, env)
    overlay = apply_overlay(coerce(interpolation.data, interpolation.paths), env)
    # A STEM_* variable replaces the file's value, so a ${VAR} in that value does not matter.
    interpolation_problems = [p for p in interpolation.problems if not _overridden(p, overlay)]
    problems = [*document.problems, *interpolation_problems, *overlay.problems]
    unresolved = {problem.path for problem in interpolation_problems}
    later = [*schema_problems(overlay.data), *semantic.check(overlay.data)]
    # A value whose ${VAR} failed is already reported; its emptiness is not a second problem.
    problems += [problem for problem in later if problem.path not in unresolved]
    if problems:
        lines = render_problems(problems, source, document.locations, overlay.sources)
        raise ConfigError(lines)
    config = build_config(overlay.data, path=path, root_dir=root_dir)
    files = tls_file_problems(config.tls) if check_files else []
    if files:
        raise ConfigError(render_problems(files, source, document.locations, overlay.sources))
    warnings = _warnings(config, document, overlay)
    if not warnings:
        return config
    lines = render_problems(warnings, source, document.locations, overlay.sources)
    return replace(config, warnings=tuple(lines))


def _warnings(config: Config, document: Document, overlay: Overlay) -> list[Problem]:
    """What works but weakens security (docs/security.md, "Warnings")."""
    # Secrets are looked for in the file as written: after interpolation a reference and a
    # literal look the same.
    found = literal_secrets(document.data, overlay.sources)
    stores = {
        "broker": config.broker,
        "result_backend": config.result_backend,
        "schedule_store": config.schedule_store,
    }
    insecure = insecure_tls(config.tls, stores)
    return [*found, insecure] if insecure else found


def _overridden(problem: Problem, overlay: Overlay) -> bool:
    path = problem.path
    return any(path[:end] in overlay.sources for end in range(1, len(path) + 1))


def _env_source(problem: Problem, sources: Mapping[YamlPath, str]) -> str | None:
    if problem.env_var:
        return problem.env_var
    for end in range(len(problem.path), 0, -1):
        if problem.path[:end] in sources:
            return sources[problem.path[:end]]
    return None


def render_problems(
    problems: list[Problem],
    source: str,
    locations: Locations,
    sources: Mapping[YamlPath, str],
) -> list[str]:
    """One `FILE:LINE:COL: yaml.path: message` line per distinct problem, in file order."""
    keyed: dict[str, tuple[int, int, int]] = {}
    for problem in problems:
        variable = _env_source(problem, sources)
        mark = problem.mark or locations.mark(problem.path, at_key=problem.at_key)
        if variable:
            where = f"env {variable}"
        else:
            where = f"{source}:{mark[0]}:{mark[1]}" if mark else source
        line = f"{where}: {format_path(problem.path)}: {problem.message}"
        rank = (1, 0, 0) if variable else (0, *(mark or (0, 0)))
        keyed.setdefault(line, rank)
    return sorted(keyed, key=lambda line: (keyed[line], line))
