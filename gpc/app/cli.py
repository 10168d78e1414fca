"""`gpc <command> [hydra overrides...]`: train parents, evaluate, search, compare, deploy and serve compositions.

Each command is a Hydra config in configs/ and a job function. Every failure ends in one line on stderr, exit
status 2 for bad input and 1 for an internal error, with the traceback only under `--debug` (or GPC_DEBUG=1).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import logging
import os
import re
import sys
import traceback
import warnings
from pathlib import Path

COMMANDS = {
    "train": ("train", "gpc.policies.train:main", "train a parent policy on a zarr dataset"),
    "eval": ("eval", "gpc.app.eval_job:main", "each parent alone and the composition on the same seeds: a table"),
    "search": ("search", "gpc.app.search_job:main", "find the composition's weights, then report them on fresh seeds"),
    "compare": ("compare", "gpc.app.compare_job:main", "paired comparison of finished runs on their common seeds"),
    "deploy": ("deploy", "gpc.hardware.deploy_job:main", "drive an arm through a rosbridge, every command checked"),
    "serve": ("serve", "gpc.app.serve:main", "serve a composition on openpi's websocket policy protocol"),
}
CONFIG_DIR = Path(str(importlib.resources.files("gpc.configs")))
DEBUG_FLAG = "--debug"


def overview() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: gpc <command> [key=value ...] [--debug]", "", "commands:"]
    lines += [f"  {name:{width}s}  {about}" for name, (_, _, about) in COMMANDS.items()]
    lines += ["", "`gpc <command> --help` lists the command's settings and config choices; settings are Hydra "
              f"overrides of {CONFIG_DIR}/<command>.yaml; --debug (or GPC_DEBUG=1) shows tracebacks."]
    return "\n".join(lines)


def command_help(config_name: str) -> str:
    """The command's config with its defaults, and the choices of each config group (`env=`, `compose=`...)."""
    from omegaconf import OmegaConf

    groups = [f"  {d.name}: {', '.join(sorted(f.stem for f in d.glob('*.yaml')))}"
              for d in sorted(CONFIG_DIR.iterdir()) if d.is_dir()]
    return "\n".join([f"usage: gpc {config_name} [key=value ...]", "config groups:", *groups,
                      f"configs/{config_name}.yaml with its defaults:", OmegaConf.to_yaml(compose(config_name, []))])


def compose(config_name: str, overrides: list[str]):
    """The command's config with the overrides; Hydra's errors reworded to name the file and the setting."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    overrides = [_user_composition(o) for o in overrides]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        try:
            return hydra_compose(config_name=config_name, overrides=overrides)
        except HydraException as err:
            from gpc.app.schema import ConfigError

            raise ConfigError(_hydra_message(str(err), config_name, hydra_compose)) from None


def _hydra_message(message: str, config_name: str, hydra_compose) -> str:
    """Hydra's first line says what, not which file or what would work: add both."""
    import difflib

    from omegaconf import OmegaConf

    source = f"configs/{config_name}.yaml"
    unknown = re.match(r"Could not override '([^']+)'", message)
    if unknown:
        key = unknown.group(1)
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(hydra_compose(config_name=config_name), parent) if parent else \
            hydra_compose(config_name=config_name)
        known = [str(k) for k in node.keys()] if OmegaConf.is_dict(node) else []
        close = difflib.get_close_matches(leaf, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known)}" if known else ""
        return f"{source}: {key}: unknown setting; {hint}".rstrip("; ")
    missing = re.match(r"In '[^']+': Could not find '([^/']+)/([^']+)'", message)
    if missing:
        group, choice = missing.groups()
        options = sorted(f.stem for f in (CONFIG_DIR / group).glob("*.yaml"))
        extra = "; or a file: compose=./my_pair.yaml" if group == "compose" else ""
        return f"{source}: {group}: no {group} named {choice!r} (choices: {', '.join(options)}){extra}"
    if message.startswith(("Error parsing override", "no viable alternative", "mismatched input", "extraneous input")):
        first = message.splitlines()[0]
        return f"{source}: {first}: settings are key=value, lists [a,b], mappings {{k: v}}"
    return f"{source}: {message.splitlines()[0]}"


def _file_choice(override: str) -> bool:
    key, _, value = override.partition("=")
    return key in ("compose", "+compose") and (value.endswith((".yaml", ".yml")) or "/" in value)


def _user_composition(override: str) -> str:
    """`compose=./my_pair.yaml`: a composition file anywhere on disk, registered as a `compose` choice so that
    later `compose.<field>=` overrides still apply. Its relative parent paths are read from its own folder
    when they are not found from the working directory."""
    if not _file_choice(override):
        return override
    key, _, value = override.partition("=")
    from hydra.core.config_store import ConfigStore

    from gpc.app.config import ConfigError, resolve_path
    from gpc.app.yaml_file import load_yaml

    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"compose: {value}: no such composition file")
    document = load_yaml(path, "composition")
    for entry in document.get("parents") or []:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            entry["path"] = str(resolve_path(entry["path"], path.resolve().parent))
    name = f"file_{abs(hash(str(path.resolve())))}"
    ConfigStore.instance().store(group="compose", name=name, node=document)
    return f"{key}={name}"


def is_bad_input(err: BaseException) -> bool:
    """Errors that mean the input is wrong (exit 2), as opposed to a fault of gpc's own (exit 1)."""
    import sqlite3

    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from gpc.app.schema import ConfigError

    return isinstance(err, (ConfigError, HydraException, OmegaConfBaseException, OSError, ValueError,
                            yaml.YAMLError, sqlite3.DatabaseError, UnicodeDecodeError))


def _one_line_warnings(message, category, filename, lineno, file=None, line=None) -> str:
    return f"gpc: warning: {' '.join(str(message).split())}\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get("GPC_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != DEBUG_FLAG]
    if argv[:1] in (["-h"], ["--help"], ["help"]):
        print(overview())
        return 0
    if not argv or argv[0] not in COMMANDS:
        given = f"unknown command {argv[0]!r}; " if argv else ""
        print(f"gpc: error: {given}commands: {', '.join(COMMANDS)} (gpc --help)", file=sys.stderr)
        return 2
    config_name, target, _ = COMMANDS[argv[0]]
    logging.getLogger("hydra").setLevel(logging.CRITICAL)  # gpc's own one line says what went wrong
    warnings.formatwarning = _one_line_warnings
    source = f"configs/{config_name}.yaml"
    user_files = [a.partition("=")[2] for a in argv[1:] if _file_choice(a)]
    if user_files:
        source += f" with compose={user_files[-1]}"
    try:
        if {"-h", "--help"} & set(argv[1:]):
            print(command_help(config_name))
            return 0
        config = compose(config_name, argv[1:])
        module, function = target.split(":")
        getattr(importlib.import_module(module), function)(config, source)
    except KeyboardInterrupt:
        print(f"gpc {argv[0]}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every failure becomes one line and a non-zero exit
        from gpc.app.config import first_line

        if debug:
            traceback.print_exc()
        if is_bad_input(err):
            print(f"gpc {argv[0]}: error: {first_line(err)}", file=sys.stderr)
            return 2
        missing = missing_package(err)
        if missing:
            print(f"gpc {argv[0]}: error: {missing}", file=sys.stderr)
            return 1
        print(f"gpc {argv[0]}: internal error: {type(err).__name__}: {first_line(err)} (gpc {DEBUG_FLAG} shows "
              "the traceback)", file=sys.stderr)
        return 1
    return 0


def missing_package(err: BaseException) -> str | None:
    """What to install, where a command needs a package that one of gpc's extras (or nothing of gpc's) provides."""
    if not isinstance(err, ModuleNotFoundError) or not err.name or err.name.split(".")[0] == "gpc":
        return None
    name = err.name.split(".")[0]
    line = f"this needs the Python package {name!r}, which is not installed"
    try:
        requirements = importlib.metadata.requires("gpc") or []
    except importlib.metadata.PackageNotFoundError:
        return line
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        if _normalized(re.split(r"[<>=!~\[ ]", spec.strip(), maxsplit=1)[0]) == _normalized(name) and "extra" in marker:
            extra = marker.split("==")[-1].strip().strip("'\"")
            return f"{line}: pip install 'gpc[{extra}]'"
    return line


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


if __name__ == "__main__":
    sys.exit(main())
