"""Fixtures for deployment tests: the simulated arm on a free port (in a process of its own, so that the
times it stamps on arriving commands are not skewed by this process's threads), `gpc deploy` runs in a
thread, and the check that every command the arm received respected the limits, as it received them."""

import threading
import time

import numpy as np
import pytest

SOURCE = "configs/deploy.yaml"
OUR_THREADS = ("rosbridge-sim", "gpc-policy", "gpc-watchdog", "gpc-decode", "roslibpy-asyncio")
# s: how much later than its write the arm's side may stamp a command, beyond the stalls its loop measured
# (ReceivedCommand.stall; shorter ones go unrecorded). The simulated arm runs with real-time scheduling where
# allowed (measured here, load 8 on 2 cores: at most 0.6 ms late); without it, a loaded machine delayed its
# reading by up to 27 ms.
JITTER = {True: 0.002, False: 0.03}


def leftover_threads(grace: float = 3.0) -> list[str]:
    deadline = time.monotonic() + grace
    while True:
        names = [t.name for t in threading.enumerate() if t.name in OUR_THREADS]
        if not names or time.monotonic() > deadline:
            return names
        time.sleep(0.05)


@pytest.fixture
def sim(tmp_path, request):
    """A simulated Panda behind a rosbridge server on a free port, in a child process (its log: sim.log in
    tmp_path; its options from an indirect parameter, if any); stopped (and this process checked for leftover
    threads) after the test."""
    pytest.importorskip("pybullet")
    pytest.importorskip("websockets")
    from gpc.hardware.rosbridge_sim import SimProcess

    server = SimProcess(log=tmp_path / "sim.log", **getattr(request, "param", {})).start()
    yield server
    server.stop()
    assert leftover_threads() == [], "threads still running after the test"


@pytest.fixture
def deploy_config(sim, tmp_path):
    """`make(*overrides)`: the deploy config aimed at the sim, logging to tmp_path/logs."""
    from gpc.app.cli import compose

    def make(*overrides):
        return compose("deploy", [f"port={sim.port}", f"log_dir={tmp_path / 'logs'}", *overrides])

    return make


class Deployment:
    """`gpc deploy`'s job running on a thread, so the test can inject faults meanwhile."""

    def __init__(self, config, wrap=None):
        from gpc.hardware.deploy_job import run

        self.config, self.summary, self.error = config, None, None
        self.stop = threading.Event()

        def target():
            try:
                self.summary = run(config, SOURCE, wrap_policy=wrap, stop=self.stop)
            except BaseException as err:  # noqa: BLE001 - re-raised by join()
                self.error = err

        self.thread = threading.Thread(target=target, name="test-deploy")
        self.thread.start()

    def join(self, timeout: float = 60.0) -> dict:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "deploy did not stop"
        if self.error is not None:
            raise self.error
        return self.summary


@pytest.fixture
def start_deploy():
    started = []

    def start(config, wrap=None) -> Deployment:
        started.append(Deployment(config, wrap))
        return started[-1]

    yield start
    for deployment in started:
        deployment.stop.set()
        deployment.thread.join(30)


def check_arrivals(commands, limits, jitter: float) -> None:
    """The limits as the arm received the commands, from their arrival times: each step within the velocity
    limit times the time since the previous command arrived, and the speed rising by at most the acceleration
    limit times that time (from rest after a reversal). A command's arrival time may be late by `jitter`
    seconds plus the stall the arm's loop measured before reading it; a late stamp on the earlier command of
    a step shortens its gap, on the later one lengthens it, so the speed of the step checked is bounded from
    below and that of the step before from above."""
    received = np.array([c.received for c in commands])
    late = jitter + np.array([c.stall for c in commands])[:, None]
    steps = np.diff(np.stack([c.positions for c in commands]), axis=0)
    gaps = np.diff(received)[:, None]
    longest, shortest = gaps + late[:-1], np.maximum(gaps - late[1:], 1e-4)
    too_fast = np.abs(steps) > limits.velocity * longest + 1e-9
    assert not too_fast.any(), (f"{too_fast.any(axis=1).sum()} commands arrived faster than the velocity limit, "
                                f"e.g. {np.abs(steps)[too_fast][0]:.4f} rad "
                                f"{gaps[too_fast.any(axis=1)][0, 0] * 1e3:.2f} ms after the previous one")
    low, high = np.abs(steps) / longest, np.abs(steps) / shortest
    base = np.where(np.sign(steps[1:]) == np.sign(steps[:-1]), high[:-1], 0.0)
    rising = low[1:] > base + limits.acceleration * longest[1:] + 1e-9
    if rising.any():
        k, j = np.argwhere(rising)[0]
        raise AssertionError(f"joint {j}: speed rose faster than the acceleration limit at command {k + 2}: steps "
                             f"{steps[max(k - 1, 0):k + 3, j].round(5).tolist()} rad, gaps "
                             f"{(gaps[max(k - 1, 0):k + 3, 0] * 1e3).round(2).tolist()} ms")


@pytest.fixture
def assert_arrivals(sim):
    """`check(commands, limits)`: `check_arrivals` with the jitter the simulated arm's scheduling allows."""
    return lambda commands, limits: check_arrivals(commands, limits, JITTER[sim.realtime])


@pytest.fixture
def assert_safe(sim):
    """`check(commands, limits)`: every command finite, inside the joint limits, within one velocity step of
    the previous one and within the velocity and acceleration limits as the arm received them
    (`check_arrivals`), and within max_jump of the arm's position when it arrived (plus the distance the arm
    can travel at the velocity limit in one watchdog timeout, the oldest observation a command may use).
    `jitter` overrides the allowance for late arrival stamps."""

    def check(commands, limits, jitter: float | None = None):
        assert commands, "the arm received no command"
        positions = np.stack([c.positions for c in commands])
        measured = np.stack([c.measured for c in commands])
        assert np.all(np.isfinite(positions)), "non-finite command"
        assert np.all(positions >= limits.lower) and np.all(positions <= limits.upper), "command beyond joint limits"
        steps = np.abs(np.diff(positions, axis=0))
        assert np.all(steps <= limits.velocity * limits.period + 1e-9), f"velocity step {steps.max():.4f} rad"
        check_arrivals(commands, limits, JITTER[sim.realtime] if jitter is None else jitter)
        jumps = np.abs(positions - measured)
        assert np.all(jumps <= limits.max_jump + limits.velocity * limits.watchdog_timeout), \
            f"jump {jumps.max():.3f} rad from the measured position"

    return check
