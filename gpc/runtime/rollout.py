"""Vectorized rollouts of a composer: every (episode seed, weight candidate) pair is one env slot, and one
batched composer call per control step serves all slots that need a new action chunk.

Sim-agnostic: an env factory returns gymnasium envs with dict observations and `info["is_success"]`;
numeric info keys named in `track_max` (PushT's `coverage`) are recorded as their maximum over the episode's
steps, not counting the reset frame, as Diffusion Policy's PushT score does (a start can already cover the goal).
A non-finite action chunk (NaN or inf) never reaches the env: its slot's episode ends there as a failure with
reason `non_finite_action` (one that never stepped keeps its reset frame's tracked values), the others go on.
Seeds are fixed per episode, so every candidate sees the same start states, and the composer's noise for
an episode depends only on (episode seed, control step), so candidates are compared on common noise.
With a store (gpc.runtime.episodes), each finished episode is recorded as it ends and a rerun skips what is
already there. Chosen episodes can be filmed (gpc.runtime.video); a stored episode whose video is missing runs again
for its frames only, in another batch, so now and then it ends differently (a warning says so). Envs with a
`render_images` attribute (robomimic's) render cameras only for the observations that the next composer
call reads: with 8-step action chunks and 2 observation steps, a quarter of them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from tqdm import tqdm

from gpc.core.composer import Composer, make_generators
from gpc.core.operators import WeightSchedule
from gpc.runtime.episodes import NON_FINITE_ACTION, Episode
from gpc.runtime.video import EpisodeVideos, clear_abandoned_partials, missing_videos

if TYPE_CHECKING:
    import gymnasium as gym

    from gpc.runtime.episodes import EpisodeStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RolloutSettings:
    """How episodes run: `n_envs` slots at once, at most `max_steps` steps each, `track_max` info keys kept as
    their maxima; with `video_dir`, every candidate's episodes of the seeds in `video_seeds` are filmed there."""

    n_envs: int
    max_steps: int
    track_max: tuple[str, ...] = ()
    progress: bool = True
    video_dir: Path | None = None
    video_seeds: tuple[int, ...] = ()


class ObsHistory:
    """Last `n` observations per slot, padded at reset by repeating the first (Diffusion Policy's rule)."""

    def __init__(self, n: int):
        self.n = n
        self.frames: list[deque] = []

    def reset(self, first_obs: list[dict]):
        self.frames = [deque([obs] * self.n, maxlen=self.n) for obs in first_obs]

    def push(self, slot: int, obs: dict):
        self.frames[slot].append(obs)

    def batch(self, slots: Sequence[int]) -> dict[str, np.ndarray]:
        keys = self.frames[slots[0]][0].keys()
        return {k: np.stack([np.stack([frame[k] for frame in self.frames[s]]) for s in slots]) for k in keys}


def stored_and_missing(store: EpisodeStore | None, setup: str, keys: Sequence[str], seeds: Sequence[int]
                       ) -> tuple[list[Episode], list[tuple[int, int]]]:
    """Episodes already in `store` for these (candidate key, seed) pairs, and the (candidate index, seed) pairs
    still to run, seed-major so that every candidate advances together."""
    wanted = [(key, int(seed)) for seed in seeds for key in keys]
    episodes = store.episodes(setup, wanted) if store else []
    finished = {(e.candidate, e.seed) for e in episodes}
    todo = [(k, int(seed)) for seed in seeds for k, key in enumerate(keys) if (key, int(seed)) not in finished]
    return episodes, todo


def rollout(composer: Composer, make_env: Callable[[], gym.Env], candidates: Sequence[WeightSchedule],
            seeds: Sequence[int], settings: RolloutSettings, store: EpisodeStore | None = None, setup: str = ""
            ) -> list[Episode]:
    """Run every candidate on every seed; returns an episode per (candidate, seed), taking those already in
    `store` (under `setup`) from it and recording each new one there as it ends."""
    keys, labels = [c.key for c in candidates], [c.label for c in candidates]
    episodes, todo = stored_and_missing(store, setup, keys, seeds)
    video_dir = settings.video_dir
    if video_dir:
        clear_abandoned_partials(video_dir)
    wanted = [(labels[k], int(seed)) for seed in settings.video_seeds for k in range(len(keys))]
    film = missing_videos(video_dir, wanted) if video_dir else set()
    stored = {(e.candidate, e.seed): e for e in episodes}
    todo += sorted({(k, seed) for k in range(len(keys)) for label, seed in film if labels[k] == label
                    and (keys[k], seed) in stored})  # run again for the frames only
    if not todo:
        return episodes
    import gymnasium as gym  # here, not at the top: the core (RoboTwin's adapter among its users) runs without it

    n_envs = min(settings.n_envs, len(todo))
    # Slots run in waves of n_envs episodes; autoreset is off, finished slots idle until the wave ends.
    envs = gym.vector.SyncVectorEnv([make_env for _ in range(n_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    limit = getattr(envs.envs[0], "_max_episode_steps", None)  # the env's own TimeLimit, if it has one
    if limit is not None and limit < settings.max_steps:
        envs.close()
        raise ValueError(f"env.max_steps: {settings.max_steps} is beyond the env's own step limit of {limit}, which "
                         f"would end episodes first; give the factory max_episode_steps: {settings.max_steps} too")
    videos = EpisodeVideos(video_dir, film, envs.envs[0].metadata.get("render_fps", 10)) if film else None
    bar = tqdm(total=len(todo), desc="episodes", disable=not settings.progress)
    non_finite = 0
    try:
        for wave_start in range(0, len(todo), n_envs):
            wave = todo[wave_start:wave_start + n_envs]
            began = time.perf_counter()
            for episode in _run_wave(composer, envs, candidates, keys, labels, wave, settings, videos):
                episode.wall_s = time.perf_counter() - began
                bar.update(1)
                before = stored.get((episode.candidate, episode.seed))
                if before is not None:  # run again for its video; the stored episode stands
                    if (before.success, before.length) != (episode.success, episode.length):
                        log.warning("the video of %s seed %d, run again for its frames, ended differently from the "
                                    "stored episode (success %s, %d steps; stored %s, %d steps)", episode.candidate,
                                    episode.seed, episode.success, episode.length, before.success, before.length)
                    continue
                episodes.append(episode)
                non_finite += episode.reason == NON_FINITE_ACTION
                if store:
                    store.record(setup, episode)
        if non_finite:
            log.warning("%d episodes ended on a non-finite action chunk (NaN or inf) from the composer; they count "
                        "as failures", non_finite)
    finally:
        bar.close()
        try:
            if videos:
                videos.close()
        finally:
            envs.close()
    return episodes


def _run_wave(composer, envs, candidates, keys, labels, wave, settings: RolloutSettings, videos=None):
    n_slots, max_steps, track_max = envs.num_envs, settings.max_steps, settings.track_max
    slot_seeds = [seed for _, seed in wave] + [wave[-1][1]] * (n_slots - len(wave))
    obs, info = envs.reset(seed=slot_seeds)
    at_reset = [{k: float(info[k][i]) for k in track_max} for i in range(n_slots)]
    history = ObsHistory(composer.n_obs_steps)
    history.reset([{k: v[i] for k, v in obs.items()} for i in range(n_slots)])
    active = np.arange(n_slots) < len(wave)
    queues: list[deque] = [deque() for _ in range(n_slots)]
    steps = np.zeros(n_slots, dtype=int)
    maxima = [{k: -np.inf for k in track_max} for _ in range(n_slots)]
    last_action = np.zeros((n_slots,) + envs.single_action_space.shape, dtype=np.float32)
    filmed = [i for i, (k, seed) in enumerate(wave) if videos and (labels[k], seed) in videos.pairs]
    for i in filmed:
        videos.start(i, labels[wave[i][0]], wave[i][1], envs.envs[i].render())
    skippable_images = all(env.has_wrapper_attr("render_images") for env in envs.envs)
    while active.any():
        need = [i for i in range(n_slots) if active[i] and not queues[i]]
        if need:
            actions = _infer(composer, history.batch(need), candidates, [(*wave[i], steps[i]) for i in need])
            for i, chunk in zip(need, actions):
                if np.isfinite(chunk).all():
                    queues[i].extend(chunk)
                    continue
                active[i] = False  # the slot idles on its last finite action; the env never sees this chunk
                k, seed = wave[i]
                yield Episode(keys[k], int(seed), False, int(steps[i]), maxima[i] if steps[i] else at_reset[i],
                              reason=NON_FINITE_ACTION)
                if i in filmed:
                    videos.finish(i, labels[k], int(seed), False)
            if not active.any():
                break
        for i in range(n_slots):
            if active[i]:
                last_action[i] = queues[i].popleft()
        if skippable_images:
            # An observation is read iff it is still among the last n_obs_steps when the slot's queue runs out.
            envs.set_attr("render_images", [bool(active[i] and len(queues[i]) < composer.n_obs_steps)
                                            for i in range(n_slots)])
        obs, _, terminated, truncated, info = envs.step(last_action)
        ended = np.zeros(n_slots, dtype=bool)
        for i in np.flatnonzero(active):
            steps[i] += 1
            history.push(i, {k: v[i] for k, v in obs.items()})
            for k in track_max:
                maxima[i][k] = max(maxima[i][k], float(info[k][i]))
            if i in filmed:
                videos.add(i, envs.envs[i].render())
            if terminated[i] or truncated[i] or info["is_success"][i] or steps[i] >= max_steps:
                active[i], ended[i] = False, True
                k, seed = wave[i]
                success = bool(info["is_success"][i])
                reason = ("success" if success else "terminated" if terminated[i] else "truncated" if truncated[i]
                          else "time_limit")
                yield Episode(keys[k], int(seed), success, int(steps[i]), maxima[i], reason=reason)
                if i in filmed:  # after the episode is stored: a failed write loses no episode
                    videos.finish(i, labels[k], int(seed), success)
        idle_done = np.asarray(terminated | truncated) | ended
        if idle_done.any() and active.any():
            # A vector env without autoreset refuses to step an ended env: reset it to idle until the wave ends.
            envs.reset(options={"reset_mask": idle_done})


def _infer(composer, obs, candidates, slots) -> np.ndarray:
    """One composer call for (candidate, episode seed, env step) slots; each slot's noise is seeded by
    its episode seed and env step only, so all candidates share it."""
    generators = make_generators([seed * 10_007 + step for _, seed, step in slots], 1, device=composer.device)
    chunk = composer.sample(composer.encode(obs), candidates, generators, row_candidates=[k for k, _, _ in slots])
    return composer.executable(chunk).cpu().numpy()
