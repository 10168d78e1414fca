"""Reading a user's YAML file: one line naming the file (and line) when it is not a YAML mapping."""

from __future__ import annotations

from pathlib import Path

import yaml

from gpc.app.schema import ConfigError


def load_yaml(path: Path, kind: str) -> dict:
    """The file's top-level mapping; `kind` names what the file should be (composition, robot, ...)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read this {kind} file ({type(err).__name__}: {err})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: a {kind} file must be a YAML mapping of fields, got {type(document).__name__}")
    return document
