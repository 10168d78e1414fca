"""`gpc compare` keeps apart runs whose folders share a name and pairs them on common seeds."""

import pytest

from gpc.app.compare_job import load_policies
from gpc.app.config import ConfigError
from gpc.runtime.episodes import Episode, EpisodeStore


def stored_run(folder, successes):
    with EpisodeStore(folder / "episodes.sqlite") as store:
        for seed, ok in enumerate(successes):
            store.record("setup", Episode("w=0.5,0.5", seed, ok, 10))
    return folder


def test_runs_in_folders_of_the_same_name_stay_apart(tmp_path):
    first = stored_run(tmp_path / "a" / "eval", [True, True, False])
    second = stored_run(tmp_path / "b" / "eval", [False, False, True])
    policies = load_policies([first, second], "compare config")
    assert policies == {f"{first}: w=0.5,0.5": {0: True, 1: True, 2: False},
                        f"{second}: w=0.5,0.5": {0: False, 1: False, 2: True}}
    assert list(load_policies([tmp_path / "a" / "eval"], "compare config")) == ["eval: w=0.5,0.5"]


def test_a_run_named_twice_is_refused(tmp_path):
    run = stored_run(tmp_path / "a", [True])
    with pytest.raises(ConfigError, match=r"runs\[1\]: .* is named twice"):
        load_policies([run, run], "compare config")
