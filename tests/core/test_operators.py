"""Operators on their own: weight schedules, the convex combination and its coverage rule, and the mixing that
keeps weight 1 on a parent bit for bit."""

import numpy as np
import pytest
import torch

from gpc.core.operators import Convex, OperatorConfig, WeightSchedule, as_schedules, mix
from gpc.core.paths import FlowPath


class _Step:
    def __init__(self, s):
        self.level = FlowPath().level(s)


def test_a_schedule_interpolates_between_its_knots_and_a_constant_does_not_move():
    schedule = WeightSchedule((0.0, 1.0), ((1.0, 0.0), (0.0, 1.0)))
    np.testing.assert_allclose(schedule.at(0.25), [0.75, 0.25])
    assert list(WeightSchedule.constant([0.2, 0.8]).at(0.9)) == [0.2, 0.8]


@pytest.mark.parametrize("weights, message", [
    ([[0.5, 0.6]], "must sum to 1"), ([[1.5, -0.5]], "finite and >= 0"), ([[0.5, 0.5, 0.0]], "3 weights for 2")])
def test_invalid_weights_are_refused_by_what_is_wrong(weights, message):
    with pytest.raises(ValueError, match=message):
        as_schedules(weights)[0].validate(2)


def test_knots_must_increase_within_zero_and_one():
    with pytest.raises(ValueError, match="knots must increase strictly"):
        WeightSchedule((0.5, 0.5), ((1.0, 0.0), (0.0, 1.0))).validate(2)


def test_keys_are_exact_and_labels_short():
    a, b = WeightSchedule.constant([1 / 3, 2 / 3]), WeightSchedule.constant([0.3333, 0.6667])
    assert a.label == b.label == "w=0.333,0.667" and a.key != b.key
    assert a.key == f"w={1 / 3!r},{2 / 3!r}"


def test_convex_renormalizes_over_the_parents_that_cover_a_position():
    coverage = torch.tensor([[True, True, False], [True, True, True]])  # parent 0's chunk is one step shorter
    convex = Convex([WeightSchedule.constant([0.25, 0.75])], coverage, torch.tensor([0, 0]), torch.float64)
    w = convex.weights(0.5)
    assert w.shape == (2, 2, 3)
    np.testing.assert_allclose(w[0, :, 0].numpy(), [0.25, 0.75])
    np.testing.assert_allclose(w[0, :, 2].numpy(), [0.0, 1.0])  # only parent 1 predicts the last step


def test_weight_one_combines_to_that_parent_bit_for_bit_and_unused_parents_are_not_asked():
    coverage = torch.ones(2, 3, dtype=torch.bool)
    convex = Convex([WeightSchedule.constant([0.0, 1.0])], coverage, torch.tensor([0]), torch.float32)
    assert convex.used(_Step(0.3)) == [False, True]
    q = torch.randn(1, 3, 2)
    assert torch.equal(convex.combine([None, q], convex.weights(0.3)), q)
    kappa = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    assert torch.equal(mix([torch.randn(1, 3, 2), q], kappa), q)


def test_operator_settings_are_checked_by_field():
    with pytest.raises(ValueError, match="name: unknown operator 'xor'"):
        OperatorConfig("xor")
    with pytest.raises(ValueError, match="temperature: must be > 0"):
        OperatorConfig("or", temperature=0)
    assert not OperatorConfig().superposed and OperatorConfig("and").superposed
