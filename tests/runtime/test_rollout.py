"""The vectorized evaluator on a dummy env whose episodes end at known steps."""

import csv
import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from gpc.core.composer import Composer
from gpc.core.operators import WeightSchedule
from gpc.core.paths import VPSchedule
from gpc.core.reference import GaussianParent
from gpc.core.samplers import SamplerConfig
from gpc.runtime.rollout import RolloutSettings, rollout
from gpc.runtime.video import video_stem


class CountdownEnv(gym.Env):
    """Succeeds after (seed % 5) + 1 steps if the actions stay positive; `progress` tracks the best action."""

    observation_space = spaces.Dict({"shift": spaces.Box(-10, 10, (4, 1), np.float32)})
    action_space = spaces.Box(-10, 10, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:  # an idle slot is reset without a seed
            self.target = seed % 5 + 1
        self.t, self.best = 0, -np.inf
        return {"shift": np.zeros((4, 1), np.float32)}, {"is_success": False, "progress": 0.0}

    def step(self, action):
        self.t += 1
        self.best = max(self.best, float(action[0]))
        success = self.t >= self.target and self.best > 0
        return ({"shift": np.zeros((4, 1), np.float32)}, 0.0, success, False,
                {"is_success": success, "progress": self.best})


class FrameCountdownEnv(CountdownEnv):
    """CountdownEnv with a camera: `frame` is the step number plus one, and `renders` counts the frames drawn."""

    observation_space = spaces.Dict({**CountdownEnv.observation_space.spaces,
                                     "frame": spaces.Box(0, 100, (1,), np.float32)})
    renders = 0

    def _render(self):
        FrameCountdownEnv.renders += 1
        return np.array([self.t + 1], np.float32)

    def reset(self, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return {**obs, "frame": self._render()}, info

    def step(self, action):
        obs, *rest = super().step(action)
        return ({**obs, "frame": self._render()}, *rest)


class SkippableFrameEnv(FrameCountdownEnv):
    """Robomimic's protocol: a step draws its frame only while `render_images` is set (a skipped frame is
    zeros); a reset always draws and sets it again."""

    render_images = True

    def reset(self, seed=None, options=None):
        self.render_images = True
        return super().reset(seed=seed, options=options)

    def _render(self):
        return super()._render() if self.render_images else np.zeros(1, np.float32)


def composer(n_obs_steps=1):
    parents = [GaussianParent("plus", VPSchedule(), "epsilon", np.full((4, 1), 2.0), 0.01 * np.eye(4), n_obs_steps),
               GaussianParent("minus", VPSchedule(), "epsilon", np.full((4, 1), -2.0), 0.01 * np.eye(4), n_obs_steps)]
    return Composer(parents, SamplerConfig("ddim", 5, VPSchedule()))


def test_rollout_runs_every_candidate_on_every_seed_with_episodes_ending_at_different_steps():
    candidates = [WeightSchedule.constant(w) for w in ([1.0, 0.0], [0.0, 1.0])]
    seeds = list(range(7))
    episodes = rollout(composer(), CountdownEnv, candidates, seeds, RolloutSettings(5, 6, ("progress",), False))
    assert sorted((e.candidate, e.seed) for e in episodes) == sorted(
        (label, s) for label in ("w=1.0,0.0", "w=0.0,1.0") for s in seeds)
    for e in episodes:
        if e.candidate == "w=1.0,0.0":  # actions near +2: succeeds exactly at its countdown
            assert e.success and e.length == e.seed % 5 + 1 and abs(e.maxima["progress"] - 2) < 0.5
        else:  # actions near -2: never succeeds, runs to the step limit
            assert not e.success and e.length == 6


def test_tracked_maxima_count_the_steps_but_not_the_reset_frame():
    class HighStartEnv(CountdownEnv):
        def reset(self, seed=None, options=None):
            obs, info = super().reset(seed=seed, options=options)
            return obs, {**info, "progress": 100.0}

    candidates = [WeightSchedule.constant(w) for w in ([1.0, 0.0], [0.0, 1.0])]
    episodes = rollout(composer(), HighStartEnv, candidates, [0, 1, 2], RolloutSettings(3, 4, ("progress",), False))
    for e in episodes:
        assert abs(e.maxima["progress"] - (2.0 if e.candidate == "w=1.0,0.0" else -2.0)) < 0.5


def test_weights_that_share_a_display_label_are_stored_apart_by_their_exact_keys(tmp_path):
    from gpc.runtime.episodes import EpisodeStore

    candidates = [WeightSchedule.constant(w) for w in ([0.3333, 0.6667], [0.3334, 0.6666])]
    assert candidates[0].label == candidates[1].label == "w=0.333,0.667"
    with EpisodeStore(tmp_path / "episodes.sqlite") as store:
        episodes = rollout(composer(), CountdownEnv, candidates, [0], RolloutSettings(2, 6, progress=False), store, "s")
        assert sorted(e.candidate for e in store.episodes("s")) == ["w=0.3333,0.6667", "w=0.3334,0.6666"]
    assert sorted(e.candidate for e in episodes) == ["w=0.3333,0.6667", "w=0.3334,0.6666"]


def test_rollout_refuses_a_step_limit_beyond_the_envs_own():
    def limited():
        return gym.wrappers.TimeLimit(CountdownEnv(), 4)

    with pytest.raises(ValueError, match="env.max_steps: 6 is beyond the env's own step limit of 4"):
        rollout(composer(), limited, [WeightSchedule.constant([1.0, 0.0])], [0], RolloutSettings(1, 6, progress=False))
    assert len(rollout(composer(), limited, [WeightSchedule.constant([1.0, 0.0])], [0], RolloutSettings(1, 4, progress=False))) == 1


def test_rollout_is_deterministic_for_the_same_seeds():
    candidates = [WeightSchedule.constant([0.5, 0.5])]
    runs = [rollout(composer(), CountdownEnv, candidates, [3, 4], RolloutSettings(2, 6, ("progress",), False))
            for _ in range(2)]
    assert runs[0] == runs[1]


def test_skippable_cameras_render_only_the_frames_the_composer_reads_and_change_nothing():
    candidates = [WeightSchedule.constant(w) for w in ([1.0, 0.0], [0.5, 0.5])]

    def run(env_class):
        model, seen = composer(n_obs_steps=2), []  # 2 observation steps, 3-step action chunks
        encode = model.encode
        model.encode = lambda obs: seen.append(obs) or encode({"shift": obs["shift"][:, -1]})
        FrameCountdownEnv.renders = 0
        episodes = rollout(model, env_class, candidates, [3, 4, 9], RolloutSettings(4, 8, progress=False))
        return episodes, seen, FrameCountdownEnv.renders

    every, every_seen, every_renders = run(FrameCountdownEnv)
    lazy, lazy_seen, lazy_renders = run(SkippableFrameEnv)
    assert lazy == every and len(lazy_seen) == len(every_seen) > 2
    for a, b in zip(lazy_seen, every_seen):
        assert np.array_equal(a["frame"], b["frame"]) and (a["frame"] > 0).all()
    assert lazy_renders < every_renders


class FilmedCountdownEnv(CountdownEnv):
    """CountdownEnv whose render() draws the step number into an 8x8 frame."""

    metadata = {"render_fps": 5}

    def render(self):
        return np.full((8, 8, 3), 40 * self.t, np.uint8)


def test_videos_film_the_chosen_episodes_and_a_rerun_films_only_missing_ones_without_rerecording(tmp_path,
                                                                                                   monkeypatch):
    iio = pytest.importorskip("imageio.v3")
    pytest.importorskip("imageio_ffmpeg")
    from gpc.runtime.episodes import EpisodeStore

    candidates = [WeightSchedule.constant(w) for w in ([1.0, 0.0], [0.0, 1.0])]
    videos = tmp_path / "videos"
    with EpisodeStore(tmp_path / "episodes.sqlite") as store:
        episodes = rollout(composer(), FilmedCountdownEnv, candidates, [1, 2, 3],
                           RolloutSettings(4, 4, progress=False, video_dir=videos, video_seeds=(2,)), store, "s")
        assert sorted(p.name for p in videos.iterdir()) == ["w=0,1_seed2_failure.mp4", "w=1,0_seed2_success.mp4"]
        frames = iio.imread(videos / "w=1,0_seed2_success.mp4")
        length = next(e.length for e in episodes if (e.candidate, e.seed) == ("w=1.0,0.0", 2))
        assert len(frames) == length + 1  # the reset frame, then one per step
        assert [int(np.median(f)) for f in frames] == pytest.approx([40 * t for t in range(length + 1)], abs=3)
        kept = (videos / "w=1,0_seed2_success.mp4").stat().st_mtime_ns
        (videos / "w=0,1_seed2_failure.mp4").unlink()
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()
        (videos / f".w=1,0_seed3.partial-{dead}.mp4").write_bytes(b"")  # as killed runs leave them, one for an
        (videos / f".w=0,1_seed1.partial-{dead}.mp4").write_bytes(b"")  # episode filmed again, one not
        (videos / f".w=0,1_seed3.partial-{os.getppid()}.mp4").write_bytes(b"")  # a live run's, still filming
        stored = sorted(episodes, key=lambda e: (e.candidate, e.seed))
        recorded = []
        monkeypatch.setattr(store, "record", lambda setup, episode: recorded.append(episode))
        again = rollout(composer(), FilmedCountdownEnv, candidates, [1, 2, 3],
                        RolloutSettings(4, 4, progress=False, video_dir=videos, video_seeds=(2, 3)), store, "s")
        assert sorted(again, key=lambda e: (e.candidate, e.seed)) == stored and recorded == []  # none run twice
    outcome = next("success" if e.success else "failure" for e in stored if (e.candidate, e.seed) == ("w=0.0,1.0", 3))
    assert sorted(p.name for p in videos.iterdir()) == [
        f".w=0,1_seed3.partial-{os.getppid()}.mp4", "w=0,1_seed2_failure.mp4", f"w=0,1_seed3_{outcome}.mp4",
        "w=1,0_seed2_success.mp4", "w=1,0_seed3_success.mp4"]
    assert (videos / "w=1,0_seed2_success.mp4").stat().st_mtime_ns == kept  # not filmed again


def test_a_video_run_again_that_ends_unlike_its_stored_episode_is_named_by_what_it_shows_and_warned(tmp_path, caplog,
                                                                                                       monkeypatch):
    pytest.importorskip("imageio_ffmpeg")
    from gpc.runtime.episodes import Episode, EpisodeStore

    with EpisodeStore(tmp_path / "episodes.sqlite") as store:
        store.record("s", Episode("w=1.0,0.0", 2, False, 4, {}))  # as if an earlier batch had failed it
        monkeypatch.setattr(store, "record", lambda setup, episode: pytest.fail("a re-filmed episode was recorded"))
        with caplog.at_level("WARNING", logger="gpc.runtime.rollout"):
            episodes = rollout(composer(), FilmedCountdownEnv, [WeightSchedule.constant([1.0, 0.0])], [2],
                               RolloutSettings(1, 4, progress=False, video_dir=tmp_path, video_seeds=(2,)), store, "s")
    assert episodes == [Episode("w=1.0,0.0", 2, False, 4, {})]
    assert [p.name for p in tmp_path.glob("*.mp4")] == ["w=1,0_seed2_success.mp4"]
    assert "ended differently from the stored episode (success True, 3 steps; stored False, 4 steps)" in caplog.text


class BreaksAtStepTwoEnv(FilmedCountdownEnv):
    def step(self, action):
        if self.t == 2:
            raise RuntimeError("simulator crashed")
        return super().step(action)


def test_an_interrupted_run_leaves_no_partial_video_and_long_labels_get_short_names(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    with pytest.raises(RuntimeError, match="simulator crashed"):
        rollout(composer(), BreaksAtStepTwoEnv, [WeightSchedule.constant([1.0, 0.0])], [4],
                RolloutSettings(1, 6, progress=False, video_dir=tmp_path, video_seeds=(4,)))
    assert list(tmp_path.iterdir()) == []
    schedule = '{"knots": [0.0, 0.25, 0.5, 0.75, 1.0], "weights": ' + "[[0.333, 0.333, 0.334]" * 5 + "}"
    stem = video_stem("schedule=" + schedule, 100_000)
    assert len(stem) < 100 and stem.endswith("_seed100000")
    assert stem != video_stem("schedule=" + schedule + " ", 100_000)  # labels that differ keep distinct names


def test_a_probe_refuses_videos_from_an_env_that_renders_no_frames():
    from omegaconf import OmegaConf

    from gpc.app.config import ConfigError, env_factory

    env = OmegaConf.create({"factory": {"_target_": "gymnasium.envs.classic_control.cartpole.CartPoleEnv"}})
    probe = env_factory(env, "configs/eval.yaml")()  # fine without videos
    assert probe.reset(seed=0) is not None
    probe.close()
    with pytest.raises(ConfigError, match="configs/eval.yaml: videos: the env renders no RGB frames"):
        env_factory(env, "configs/eval.yaml", need_frames=True)


class EndingEnv(CountdownEnv):
    """Ends each seed's episode its own way at step 2: seed 0 succeeds, 1 is terminated by the env, 2 is
    truncated by the env, 3 runs on to the step limit."""

    def step(self, action):
        obs, reward, _, _, info = super().step(action)
        ends = self.t >= 2
        success = ends and self.target == 1
        return obs, reward, success or (ends and self.target == 2), ends and self.target == 3, {
            **info, "is_success": success}

    def reset(self, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        if seed is not None:
            self.target = seed + 1
        return obs, info


def test_episodes_record_why_they_ended():
    episodes = rollout(composer(), EndingEnv, [WeightSchedule.constant([1.0, 0.0])], [0, 1, 2, 3],
                       RolloutSettings(4, 3, progress=False))
    assert {e.seed: (e.reason, e.success, e.length) for e in episodes} == {
        0: ("success", True, 2), 1: ("terminated", False, 2), 2: ("truncated", False, 2), 3: ("time_limit", False, 3)}


class PoisonEnv(CountdownEnv):
    """CountdownEnv whose observation flags `poison` from step POISONED[seed] on; every action any instance
    is given is kept in `received`."""

    observation_space = spaces.Dict({**CountdownEnv.observation_space.spaces,
                                     "poison": spaces.Box(0, 1, (1,), np.float32)})
    POISONED = {1: 0, 4: 4, 6: 0}  # seed -> the step from which the parent answers NaN
    received: list = []

    def _obs(self, obs):
        return {**obs, "poison": np.array([float(self.t >= self.POISONED.get(self.seed_used, 10**9))], np.float32)}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.seed_used = seed
        obs, info = super().reset(seed=seed, options=options)
        return self._obs(obs), info

    def step(self, action):
        PoisonEnv.received.append(np.array(action))
        obs, *rest = super().step(action)
        return (self._obs(obs), *rest)


class PoisonedParent(GaussianParent):
    """GaussianParent that predicts NaN for the rows whose observation is flagged `poison`."""

    def encode(self, obs):
        flag = torch.as_tensor(np.asarray(obs["poison"])[:, -1], dtype=torch.float64).reshape(-1, 1)
        return torch.cat([super().encode(obs), flag], 1)

    def predict(self, sample, timestep, encoding):
        out = super().predict(sample, timestep, encoding[:, :-1]).clone()
        out[encoding[:, -1] > 0] = float("nan")
        return out


def test_a_non_finite_chunk_ends_only_its_episode_as_a_failure_and_never_reaches_the_env(tmp_path, caplog):
    from gpc.runtime.episodes import EpisodeStore
    from gpc.runtime.report import format_table, summarize, write_reports

    parent = PoisonedParent("plus", VPSchedule(), "epsilon", np.full((4, 1), 2.0), 0.01 * np.eye(4))
    model = Composer([parent], SamplerConfig("ddim", 5, VPSchedule()))  # 4-step chunks
    PoisonEnv.received = []
    seeds = list(range(7))  # waves [0 1 2] [3 4 5] [6]: the last one's only episode is poisoned at once
    with EpisodeStore(tmp_path / "episodes.sqlite") as store, caplog.at_level("WARNING", logger="gpc.runtime.rollout"):
        episodes = rollout(model, PoisonEnv, [WeightSchedule.constant([1.0])], seeds,
                           RolloutSettings(3, 8, ("progress",), False), store=store, setup="s")
        assert sorted(store.episodes("s"), key=lambda e: e.seed) == sorted(episodes, key=lambda e: e.seed)
    by_seed = {e.seed: e for e in episodes}
    assert sorted(by_seed) == seeds
    for seed in (1, 6):  # NaN from the first chunk: no step taken; the reset frame's progress is kept
        assert (by_seed[seed].success, by_seed[seed].length, by_seed[seed].reason) == (False, 0, "non_finite_action")
        assert by_seed[seed].maxima == {"progress": 0.0}
    # seed 4 needs 5 steps: its first chunk ran (4 steps, actions near +2), the second was NaN
    assert (by_seed[4].success, by_seed[4].length, by_seed[4].reason) == (False, 4, "non_finite_action")
    assert abs(by_seed[4].maxima["progress"] - 2) < 0.5
    for seed in (0, 2, 3, 5):  # the other slots, in the same waves, went on to succeed at their countdown
        assert (by_seed[seed].success, by_seed[seed].length, by_seed[seed].reason) == (True, seed % 5 + 1, "success")
    received = np.concatenate(PoisonEnv.received)
    assert len(received) > 0 and np.isfinite(received).all()
    assert "3 episodes ended on a non-finite action chunk" in caplog.text

    row, = summarize(episodes, ["w=1.0"], ["plus"])
    assert (row.episodes, row.non_finite, row.success_rate) == (7, 3, 4 / 7)
    table = format_table([row]).splitlines()
    assert table[0].split(" | ")[-1].strip() == "non-finite" and table[2].split(" | ")[-1].strip() == "3"
    write_reports([row], tmp_path / "report")
    assert json.loads((tmp_path / "report" / "summary.json").read_text())[0]["non_finite"] == 3
    with open(tmp_path / "report" / "summary.csv") as stream:
        assert [r["non_finite"] for r in csv.DictReader(stream)] == ["3"]


def test_a_sound_policy_reports_no_non_finite_episodes():
    from gpc.runtime.report import format_table, summarize

    episodes = rollout(composer(), CountdownEnv, [WeightSchedule.constant([1.0, 0.0])], [0, 1],
                       RolloutSettings(2, 6, progress=False))
    row, = summarize(episodes, ["w=1.0,0.0"], ["plus"])
    assert row.non_finite == 0 and {e.reason for e in episodes} == {"success"}
    assert format_table([row]).splitlines()[2].split(" | ")[-1].strip() == "0"
