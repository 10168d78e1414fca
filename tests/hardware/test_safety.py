"""The safety layer without a network: every check, the hold / clamp choice, and that nothing unsafe gets out."""

import json

import numpy as np
import pytest

from gpc.hardware.safety import Inputs, SafeCommand, SafetyLayer, SafetyLimits, Sent, evaluate

DOF = 3
PERIOD = 0.02


def limits(**overrides) -> SafetyLimits:
    values = dict(lower=[-1.0, -1.0, -1.0], upper=[1.0, 1.0, 1.0], velocity=1.0, acceleration=4.0, max_jump=0.3,
                  period=PERIOD, watchdog_timeout=0.1)
    values.update(overrides)
    return SafetyLimits(np.asarray(values.pop("lower")), np.asarray(values.pop("upper")), **values)


def inputs(target, measured=(0.0, 0.0, 0.0), age=0.01, connected=True, estop=False) -> Inputs:
    return Inputs(None if target is None else np.asarray(target, dtype=float),
                  None if measured is None else np.asarray(measured, dtype=float), age, connected, estop)


class FakeRobot:
    """Measured state follows the last published command exactly, which is written the moment it is issued;
    faults are switched by the test."""

    def __init__(self, positions=(0.0, 0.0, 0.0)):
        self.positions = np.asarray(positions, dtype=float)
        self.received = 0.0
        self.connected = True
        self.estop_engaged = False
        self.sent: list[SafeCommand] = []

    def latest_joint_positions(self):
        return self.positions.copy(), self.received

    def claim(self) -> Sent | None:
        if not self.sent:
            return None
        last = self.sent[-1]
        before = self.sent[-2] if len(self.sent) > 1 else None
        velocity = np.zeros(DOF) if before is None else (last.positions - before.positions) / (last.issued - before.issued)
        return Sent(last.positions, last.issued, velocity)

    def publish(self, command: SafeCommand) -> bool:
        self.sent.append(command)
        self.positions = command.positions.copy()
        return True


def test_a_safe_command_is_made_only_by_the_safety_layer():
    with pytest.raises(TypeError, match="only by"):
        SafeCommand(np.zeros(DOF), 0.0, False, token=object())
    command = SafetyLayer(limits(), FakeRobot()).step(np.full(DOF, 0.01), now=0.0)
    assert isinstance(command, SafeCommand) and not command.positions.flags.writeable


def test_a_small_step_inside_every_limit_passes_unchanged():
    # the arm at 0 moving at (0.5, -0.5, 0) rad/s, following a target that moves with it
    verdict = evaluate(inputs([0.01, -0.01, 0.0]), limits(), np.zeros(DOF), np.array([0.5, -0.5, 0.0]), np.zeros(DOF))
    assert verdict.positions.tolist() == [0.01, -0.01, 0.0]
    assert not verdict.held and verdict.faults == () and verdict.clamps == ()


@pytest.mark.parametrize("case, fault", [
    (dict(target=[np.nan, 0, 0]), "non_finite"),
    (dict(target=[np.inf, 0, 0]), "non_finite"),
    (dict(target=[0.0, 0.0]), "malformed"),
    (dict(target=[0.0, 0.5, 0.0]), "jump"),
    (dict(target=None), "no_action"),
    (dict(target=[0.01, 0, 0], age=0.2), "stale_observation"),
    (dict(target=[0.01, 0, 0], age=None, measured=None), "stale_observation"),
    (dict(target=[0.01, 0, 0], connected=False), "connection_lost"),
    (dict(target=[0.01, 0, 0], measured=[0.0, np.nan, 0.0]), "bad_observation"),
    (dict(target=[0.01, 0, 0], measured=[0.0, 0.0]), "bad_observation"),
    (dict(target=[0.01, 0, 0], estop=True), "estop"),
])
def test_faults_hold_the_last_safe_command_or_send_nothing(case, fault):
    last = np.array([0.05, 0.0, 0.0])
    verdict = evaluate(inputs(**case), limits(), last, np.ones(DOF))
    assert verdict.held and fault in verdict.faults
    assert verdict.positions.tolist() == last.tolist()
    assert evaluate(inputs(**case), limits(), None, np.zeros(DOF)).positions is None  # nothing known: send nothing


def test_a_target_beyond_the_joint_limits_is_clamped_and_the_arm_stops_at_the_limit():
    lim, robot = limits(), FakeRobot([0.8, 0.0, 0.0])
    layer = SafetyLayer(lim, robot)
    for k in range(100):
        robot.received = k * PERIOD
        layer.step(robot.positions + [0.25, 0.0, 0.0], now=k * PERIOD)
    positions = np.array([c.positions[0] for c in robot.sent])
    assert positions.max() <= 1.0 and positions[-1] == pytest.approx(1.0)
    assert layer.events["position_limit"] == 1 and layer.held == 0
    accelerations = np.abs(np.diff(np.diff(positions) / PERIOD)) / PERIOD
    # braked under the acceleration limit, but for the last step into the limit (position limits win)
    assert np.sum(accelerations > 4.0 + 1e-6) <= 1 and accelerations.max() <= 8.0


def test_a_far_target_within_max_jump_is_slowed_to_the_velocity_and_acceleration_limits():
    lim, robot = limits(), FakeRobot()
    layer = SafetyLayer(lim, robot)
    for k in range(40):
        robot.received = k * PERIOD
        layer.step(robot.positions + 0.25, now=k * PERIOD)
    steps = np.diff(np.stack([np.zeros(DOF)] + [c.positions for c in robot.sent]), axis=0)
    assert np.all(np.abs(steps) <= 1.0 * PERIOD + 1e-12)
    assert steps[0, 0] == pytest.approx(4.0 * PERIOD * PERIOD)  # from rest: one step of acceleration
    assert steps[-1, 0] == pytest.approx(1.0 * PERIOD)  # then at the velocity limit
    assert layer.events["acceleration_limit"] == 1 and layer.events["velocity_limit"] == 1


def run_to(layer, targets, start=0.0):
    """Tick the layer once a period with targets for joint 0; returns every command's joint 0 so far."""
    for k, target in enumerate(targets):
        layer.robot.received = start + k * PERIOD
        layer.step(np.array([target, 0.0, 0.0]), now=start + k * PERIOD)
    return np.array([c.positions[0] for c in layer.robot.sent])


def test_a_target_step_is_reached_without_overshoot_under_the_acceleration_limit():
    robot = FakeRobot()
    positions = run_to(SafetyLayer(limits(), robot), [0.25] * 60)
    # the discrete braking ends within a fraction of one step of acceleration (4 rad/s^2 * dt^2 = 0.0016 rad);
    # without braking for the target it overshot by 0.11 rad
    assert positions.max() - 0.25 < 4.0 * PERIOD ** 2 / 4 and positions[-1] == pytest.approx(0.25)
    velocities = np.diff(np.concatenate([[0.0], positions])) / PERIOD
    assert np.abs(np.diff(np.concatenate([[0.0], velocities]))).max() / PERIOD <= 4.0 + 1e-6


def test_a_moving_target_is_followed_at_its_own_speed():
    robot = FakeRobot()
    ramp = 0.5 * PERIOD * np.arange(1, 41)  # 0.5 rad/s, half the velocity limit
    positions = run_to(SafetyLayer(limits(), robot), ramp)
    assert np.diff(positions)[-10:] == pytest.approx(0.5 * PERIOD)  # caught up: no braking for a moving target
    assert positions[-1] == pytest.approx(ramp[-1], abs=0.02)


def test_after_a_stalled_loop_motion_restarts_from_rest():
    robot = FakeRobot()
    layer = SafetyLayer(limits(), robot)
    positions = run_to(layer, 0.5 * PERIOD * np.arange(1, 31))
    restart = run_to(layer, [positions[-1] + 0.05], start=30 * PERIOD + 0.5)[-1]
    assert restart - positions[-1] == pytest.approx(4.0 * PERIOD * PERIOD)  # one step of acceleration from rest


def test_a_connection_loss_holds_until_restart_unless_resuming_is_allowed():
    for resume, expected in ((False, [False, True, True]), (True, [False, True, False])):
        robot = FakeRobot()
        layer = SafetyLayer(limits(), robot, resume_after_reconnect=resume)
        layer.step(np.full(DOF, 0.01), now=0.0)
        robot.connected = False
        layer.step(np.full(DOF, 0.01), now=PERIOD)  # not sent: the robot is not connected
        robot.connected = True
        layer.step(np.full(DOF, 0.01), now=2 * PERIOD)
        assert layer.events["connection_lost"] == 1
        assert [c.held for c in robot.sent] == expected


def test_an_arm_that_starts_outside_its_limits_is_not_moved():
    verdict = evaluate(inputs([1.1, 0, 0], measured=[1.2, 0, 0]), limits(), None, np.zeros(DOF))
    assert verdict.held and verdict.faults == ("outside_limits",) and verdict.positions is None


@pytest.mark.parametrize("hold_while_estopped", [False, True])
def test_while_the_estop_is_engaged_nothing_moves_and_motion_resumes_from_rest(hold_while_estopped):
    """The robot adapter latches the e-stop (gpc.hardware.receive.EstopMonitor); while it says engaged, no
    motion goes out, and holds only if the robot needs them. After a release the arm starts from rest."""
    robot = FakeRobot()
    layer = SafetyLayer(limits(), robot, hold_while_estopped=hold_while_estopped)
    run_to(layer, PERIOD * np.arange(1, 11))  # moving at 1 rad/s
    robot.estop_engaged = True
    during = run_to(layer, [0.3] * 5, start=10 * PERIOD)[10:]
    assert list(during) == ([robot.sent[9].positions[0]] * 5 if hold_while_estopped else [])
    assert all(c.held for c in robot.sent[10:])
    robot.estop_engaged = False
    resumed = run_to(layer, [0.3], start=15 * PERIOD)[-1] - robot.sent[-2].positions[0]
    assert resumed == pytest.approx(4.0 * PERIOD * PERIOD)  # one step of acceleration from rest
    assert layer.events["estop"] == 1


def test_steps_are_bounded_by_the_time_since_the_last_command_went_out():
    """Late ticks, bunched ticks and ticks inside min_interval: no step exceeds the velocity limit times
    the time since the previous command was written (at most one period), and none goes out sooner than
    min_interval after it."""
    lim, robot = limits(min_interval=0.008), FakeRobot()
    layer = SafetyLayer(lim, robot)
    run_to(layer, [0.25] * 40)  # at the velocity limit
    times = 40 * PERIOD + np.cumsum([0.035, 0.002, 0.0005, 0.009, 0.02, 0.03, 0.001, 0.012, 0.02])
    for now in times:
        robot.received = now
        layer.step(np.array([robot.positions[0] + 0.25, 0.0, 0.0]), now=now)
    issued = np.array([c.issued for c in robot.sent])
    positions = np.array([c.positions[0] for c in robot.sent])
    gaps, steps = np.diff(issued), np.diff(positions)
    assert gaps.min() >= 0.008 and layer.too_soon == 3  # the ticks 2, 2.5 and 1 ms after a command sent nothing
    assert np.all(steps <= lim.velocity[0] * np.minimum(gaps, PERIOD) + 1e-12)
    assert steps[-5:].min() < lim.velocity[0] * PERIOD  # shorter gaps, shorter steps


def test_random_targets_never_produce_an_unsafe_command():
    rng = np.random.default_rng(0)
    lim, robot = limits(), FakeRobot()
    layer = SafetyLayer(lim, robot)
    for k in range(2000):
        robot.received = k * PERIOD - rng.choice([0.0, 0.0, 0.0, 0.5])  # now and then a stale observation
        robot.connected = rng.random() > 0.02
        robot.positions = robot.positions + rng.normal(0, 0.003, DOF)  # tracking noise
        target = robot.positions + rng.choice([0.01, 0.2, 0.29, 3.0]) * rng.normal(size=DOF)
        if rng.random() < 0.05:
            target[rng.integers(DOF)] = rng.choice([np.nan, np.inf, -np.inf])
        layer.step(target, now=k * PERIOD)
    sent = np.stack([c.positions for c in robot.sent])
    assert np.all(np.isfinite(sent))
    assert np.all(sent >= lim.lower) and np.all(sent <= lim.upper)
    assert np.all(np.abs(np.diff(sent, axis=0)) <= lim.velocity * PERIOD + 1e-12)
    assert {"non_finite", "jump", "stale_observation", "connection_lost"} <= set(layer.events)


def test_events_are_logged_once_per_episode_and_a_dry_run_sends_nothing(tmp_path):
    robot = FakeRobot()
    with SafetyLayer(limits(), robot, tmp_path, dry_run=True) as layer:
        for k, target in enumerate([[0.001] * 3, [np.nan] * 3, [np.nan] * 3, [0.001] * 3, [np.nan] * 3]):
            layer.step(np.asarray(target), now=k * PERIOD)
    assert robot.sent == [] and layer.published == 5
    events = [json.loads(line) for line in (tmp_path / "safety_events.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["action"]) for e in events] == [("non_finite", "hold"), ("non_finite", "hold")]
    assert layer.events["non_finite"] == 2 and layer.ticks["non_finite"] == 3
    commands = [json.loads(line) for line in (tmp_path / "commands.jsonl").read_text().splitlines()]
    assert [c["held"] for c in commands] == [False, True, True, False, True]


def test_limits_are_validated():
    with pytest.raises(ValueError, match="lower"):
        limits(lower=[1.0, -1.0, -1.0])
    with pytest.raises(ValueError, match="velocity"):
        limits(velocity=0.0)
