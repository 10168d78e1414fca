"""Which action plays when: chunk timing, skipping late actions, ACT ensembling; and the rehearsal policy pair."""

import numpy as np
import pytest

from gpc.hardware.control_loop import ActionSchedule, Chunk, ComposedPolicy
from gpc.hardware.joint_policy import joint_reach_composer, reach_chunk
from gpc.hardware.robot import JointState, Observation

PERIOD = 0.02


def chunk(index, observed, values):
    return Chunk(index, observed, observed, np.asarray(values, dtype=float)[:, None])


def test_the_action_for_now_skips_the_actions_whose_time_has_passed():
    schedule = ActionSchedule(PERIOD)
    schedule.add(chunk(0, 1.0, [10, 11, 12, 13]))
    assert schedule.action_at(1.0)[0] == 10
    assert schedule.action_at(1.0 + 2.5 * PERIOD)[0] == 12  # computed late: steps 0 and 1 are skipped
    assert schedule.action_at(1.0 + 4 * PERIOD) is None  # the chunk ran out: the policy is late
    assert schedule.action_at(0.99) is None  # not yet


def test_the_newest_chunk_wins_without_ensembling():
    schedule = ActionSchedule(PERIOD)
    schedule.add(chunk(1, 1.0 + PERIOD, [20, 21, 22]))
    schedule.add(chunk(0, 1.0, [10, 11, 12, 13]))  # arrives later but was observed earlier
    assert schedule.action_at(1.0 + PERIOD)[0] == 20


def test_temporal_ensembling_weights_older_chunks_as_act_does():
    decay = 0.5
    schedule = ActionSchedule(PERIOD, ensemble_decay=decay)
    schedule.add(chunk(0, 1.0, [10, 11, 12, 13]))
    schedule.add(chunk(1, 1.0 + PERIOD, [30, 31, 32]))
    weights = np.exp(-decay * np.arange(2))
    expected = (weights[0] * 11 + weights[1] * 30) / weights.sum()
    assert schedule.action_at(1.0 + PERIOD)[0] == pytest.approx(expected)
    assert schedule.action_at(1.0 + 3 * PERIOD)[0] == pytest.approx((weights[0] * 13 + weights[1] * 32) / weights.sum())
    assert schedule.action_at(1.0 + 3.5 * PERIOD + 1 * PERIOD) is None


def test_the_composed_reach_pair_moves_toward_the_weighted_mean_of_its_targets():
    lower, upper = np.full(3, -2.0), np.full(3, 2.0)
    targets = [[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
    composer = joint_reach_composer(targets, lower, upper, PERIOD, horizon=8, n_action_steps=6, noise_std=1e-4)
    assert [p.spec.kind for p in composer.parents] == ["diffusion", "flow"]
    start = np.zeros(3)
    observation = Observation((JointState(start, np.zeros(3), 0.0),), {})
    actions = ComposedPolicy(composer, [[0.25, 0.75]])(observation)
    expected = sum(w * reach_chunk(start[None], np.asarray(t), 8, PERIOD, 0.5, 0.5)[0, :6]
                   for w, t in zip([0.25, 0.75], targets))
    assert actions.shape == (6, 3)
    np.testing.assert_allclose(actions, expected, atol=2e-3)
