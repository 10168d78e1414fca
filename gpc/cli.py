"""`gpc <command> [hydra overrides...]`: train parents, evaluate, search, compare and serve compositions.

Each command is a Hydra config in configs/ and a job function; bad input exits 2 with one line.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

COMMANDS = {
    "train": ("train", "gpc.policies.train:main"),
    "eval": ("eval", "gpc.eval_job:main"),
    "search": ("search", "gpc.search_job:main"),
    "compare": ("compare", "gpc.compare_job:main"),
    "deploy": ("deploy", "gpc.hardware.deploy_job:main"),
    "serve": ("serve", "gpc.serve:main"),
}
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def usage() -> str:
    return "usage: gpc {" + ",".join(COMMANDS) + "} [key=value ...]   (Hydra overrides; configs in " \
           f"{CONFIG_DIR})"


def command_help(config_name: str) -> str:
    """The command's config with its defaults, and the choices of each config group (`env=`, `compose=`...)."""
    from omegaconf import OmegaConf

    groups = [f"  {d.name}: {', '.join(sorted(f.stem for f in d.glob('*.yaml')))}"
              for d in sorted(CONFIG_DIR.iterdir()) if d.is_dir()]
    return "\n".join([f"usage: gpc {config_name} [key=value ...]", "config groups:", *groups,
                      f"configs/{config_name}.yaml with its defaults:", OmegaConf.to_yaml(compose(config_name, []))])


def compose(config_name: str, overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    overrides = [_user_composition(o) for o in overrides]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name=config_name, overrides=overrides)


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

    from gpc.config import ConfigError, resolve_path
    from gpc.yaml_file import load_yaml

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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(usage(), file=sys.stderr)
        return 2
    config_name, target = COMMANDS[argv[0]]
    if {"-h", "--help"} & set(argv[1:]):
        print(command_help(config_name))
        return 0
    source = f"configs/{config_name}.yaml"
    user_files = [a.partition("=")[2] for a in argv[1:] if _file_choice(a)]
    if user_files:
        source += f" with compose={user_files[-1]}"
    try:
        config = compose(config_name, argv[1:])
        module, function = target.split(":")
        getattr(importlib.import_module(module), function)(config, source)
    except Exception as err:  # noqa: BLE001 - every failure becomes one line and a non-zero exit
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        from gpc.config import ConfigError, first_line

        if isinstance(err, (ConfigError, HydraException, OmegaConfBaseException, FileNotFoundError, ValueError)):
            print(f"gpc {argv[0]}: error: {first_line(err)}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
