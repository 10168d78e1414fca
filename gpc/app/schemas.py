"""The schema of every command's config and of the composition file, checked once when a command starts.

Each is a dataclass read by gpc.app.schema.check: unknown keys are refused (with "did you mean"), types and ranges are
checked and every error names the file and the field. `docs/configuration.md` is generated from these classes and
the other commands' (`python -m gpc.app.docs`), so the documentation and the checks cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from gpc.app.schema import doc
from gpc.core.acceleration import FastPath
from gpc.core.operators import OperatorConfig
from gpc.core.samplers import SamplerConfig


@dataclass(frozen=True)
class ParentEntry:
    path: str = field(metadata=doc("checkpoint folder or file"))
    format: Optional[str] = field(default=None, metadata=doc(
        "gpc, gpc_onnx, lerobot, diffusion_policy or a format an installed package registers (`gpc.loaders`); "
        "recognized from the files when absent"))
    name: Optional[str] = field(default=None, metadata=doc("display name (default: the checkpoint's)"))
    observations: dict[str, str] = field(default_factory=dict, metadata=doc(
        "the parent's observation keys mapped onto the env's: {parent key: env key}"))
    action_stats: Optional[str] = field(default=None, metadata=doc(
        "gpc formats: which action statistics a policy trained with `action_stats_by` acts with"))
    trust: bool = field(default=False, metadata=doc(
        "diffusion_policy: unpickle globals beyond gpc's allowlist (runs code the file names)"))
    loader: Optional[str] = field(default=None, metadata=doc(
        "a dotted function `(path, device) -> parent`; runs code, so it needs `trust_code: true`"))
    trust_code: bool = field(default=False, metadata=doc("allow `loader` to run"))


@dataclass(frozen=True)
class Composition:
    parents: list[ParentEntry] = field(metadata=doc("the parents, each a mapping with at least `path`"))
    weights: Any = field(default=None, metadata=doc(
        "a weight vector, a list of them, or schedules {knots: [...], weights: [[...], ...]}"))
    operator: Union[str, OperatorConfig] = field(default="convex", metadata=doc(
        "convex | or | and, or a mapping {name, temperature, probe_scale}"))
    sampler: Union[Literal["native"], SamplerConfig] = field(default="native", metadata=doc(
        "native (the first parent's own sampler) or {name, num_inference_steps, schedule, prediction_type, "
        "clip_sample, clip_sample_range, timestep_spacing, eta, step_coefficients}"))
    n_action_steps: Optional[int] = field(default=None, metadata=doc(
        "actions executed per chunk (default: the fewest any parent executes)", minimum=1))
    device: str = field(default="cpu", metadata=doc("cpu, cuda, cuda:N"))
    fast: FastPath = field(default_factory=FastPath, metadata=doc("fuse, compile, precision of the parents' networks"))
    normalizers: Literal["exact", "approximate"] = field(default="exact", metadata=doc(
        "parents whose action normalizers differ per dimension in scale compose only approximately: allow it"))


@dataclass(frozen=True)
class EnvConfig:
    factory: dict[str, Any] = field(metadata=doc(
        "`_target_` (a function that makes one gymnasium env) and its keyword arguments; tried once before any "
        "output"))
    max_steps: int = field(metadata=doc("steps before an episode counts as failed", minimum=1))
    n_envs: int = field(default=10, metadata=doc("env slots run at once (one batched composer call)", minimum=1))
    track_max: list[str] = field(default_factory=list, metadata=doc(
        "numeric `info` keys recorded as their maximum over each episode's steps"))

    def __post_init__(self):
        if not isinstance(self.factory.get("_target_"), str):
            raise ValueError("factory: needs `_target_`, the function that makes one env")


COMPOSE_DOC = "the composition (configs/compose/<name>, or compose=<file.yaml>); see `Composition`"


@dataclass(frozen=True)
class EvalConfig:
    compose: Any = field(metadata=doc(COMPOSE_DOC))
    env: EnvConfig = field(metadata=doc("the env (configs/env/<name>)"))
    weights: Any = field(default=None, metadata=doc("overrides compose.weights: a vector or a list of vectors"))
    alone: bool = field(default=True, metadata=doc("also run each parent alone"))
    alone_sampler: Literal["native", "working"] = field(default="native", metadata=doc(
        "native: each alone row under its own codebase's sampler; working: as weight 1 under the composition's"))
    sweep: Optional[float] = field(default=None, metadata=doc(
        "grid step of a two-parent line sweep (both parents alone included)", positive=True, maximum=1.0))
    episodes: int = field(default=20, metadata=doc("seeds per row", minimum=1))
    seed: int = field(default=100000, metadata=doc("first test seed", minimum=0))
    videos: int = field(default=0, metadata=doc("film the first N seeds of every row (mp4)", minimum=0))
    progress: bool = field(default=True, metadata=doc("a progress bar"))
    output_dir: str = field(default="outputs/eval", metadata=doc(
        "episodes.sqlite, summary.json/csv, videos/; a rerun resumes"))


@dataclass(frozen=True)
class SearchConfig:
    compose: Any = field(metadata=doc(COMPOSE_DOC))
    env: EnvConfig = field(metadata=doc("the env (configs/env/<name>)"))
    space: Literal["line", "simplex", "schedule"] = field(default="line", metadata=doc(
        "line (2 parents), simplex (N parents), schedule (weights at the clean and the noise end)"))
    step: float = field(default=0.1, metadata=doc("grid step of every weight; must divide 1", positive=True,
                                                  maximum=1.0))
    strategy: Literal["adaptive", "gp", "grid"] = field(default="adaptive", metadata=doc(
        "adaptive (successive rejects on common seeds), gp (also drops unlikely weights), grid (the paper's)"))
    budget: int = field(default=550, metadata=doc("selection episodes in all", minimum=1))
    delta: float = field(default=0.05, metadata=doc("adaptive, gp: level of the early stop's sign test",
                                                    positive=True, below=1.0))
    lengthscale: float = field(default=0.15, metadata=doc("gp: lengthscale over the weights", positive=True))
    selection_seed: int = field(default=100000, metadata=doc("first selection seed", minimum=0))
    report_seed: int = field(default=200000, metadata=doc("first fresh seed for the chosen weights", minimum=0))
    report_episodes: int = field(default=100, metadata=doc("fresh-seed episodes for the chosen weights", minimum=0))
    backend: Literal["local", "ray"] = field(default="local", metadata=doc("local or ray"))
    ray_address: Optional[str] = field(default=None, metadata=doc("ray: null starts a local cluster; auto, ray://..."))
    ray_workers: Optional[int] = field(default=None, metadata=doc("ray: actors (default: the cluster's CPUs)",
                                                                  minimum=1))
    progress: bool = field(default=True, metadata=doc("a progress bar"))
    output_dir: str = field(default="outputs/search", metadata=doc(
        "search.json, sweep.png, episodes.sqlite; a rerun resumes"))


@dataclass(frozen=True)
class CompareConfig:
    runs: Union[list[str], str] = field(metadata=doc(
        "run folders holding episodes.sqlite (gpc eval / gpc search output_dir): runs=[a,b]; one folder compares "
        "its own rows"))


@dataclass(frozen=True)
class ServeConfig:
    compose: Any = field(metadata=doc(COMPOSE_DOC))
    host: str = field(default="127.0.0.1", metadata=doc("0.0.0.0 listens on every interface: set a token then"))
    port: int = field(default=8000, metadata=doc("0 picks a free port (printed)", minimum=0, maximum=65535))
    token: Optional[str] = field(default=None, metadata=doc(
        "required as the header `Authorization: Api-Key <token>` (env GPC_SERVE_TOKEN)"))
    weights: Any = field(default=None, metadata=doc("overrides compose.weights: one vector or schedule"))
    seed: int = field(default=0, metadata=doc("noise seed of step n of a connection's episode k", minimum=0))
    max_message_bytes: int = field(default=8388608, metadata=doc("a larger request closes its connection",
                                                                 minimum=1))
    max_connections: int = field(default=8, metadata=doc("one per robot", minimum=1))
    torch_threads: Optional[int] = field(default=None, metadata=doc("the inference thread's torch threads",
                                                                    minimum=1))
