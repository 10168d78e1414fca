"""LeRobot policy plugin: `--policy.type=gpc` runs a gpc composition in LeRobot's eval loop, robots and async
inference. LeRobot imports this package by its distribution name, which registers the config; the observation
mapping (`mapping`) needs no LeRobot, so it stays importable (and tested) without it."""

try:
    import lerobot  # noqa: F401
except ModuleNotFoundError as err:  # only LeRobot's absence is tolerated: then just `mapping` is usable
    if err.name != "lerobot":
        raise
else:
    from lerobot_policy_gpc.configuration_gpc import GpcConfig
    from lerobot_policy_gpc.modeling_gpc import GpcPolicy
    from lerobot_policy_gpc.processor_gpc import make_gpc_pre_post_processors

    __all__ = ["GpcConfig", "GpcPolicy", "make_gpc_pre_post_processors"]
