"""Fixtures for deployment tests: the simulated arm on a free port, `gpc deploy` runs in a thread, and the
check that every command the arm received respected the limits."""

import threading
import time

import numpy as np
import pytest

SOURCE = "configs/deploy.yaml"
OUR_THREADS = ("rosbridge-sim", "gpc-policy", "roslibpy-asyncio")


def leftover_threads(grace: float = 3.0) -> list[str]:
    deadline = time.monotonic() + grace
    while True:
        names = [t.name for t in threading.enumerate() if t.name in OUR_THREADS]
        if not names or time.monotonic() > deadline:
            return names
        time.sleep(0.05)


@pytest.fixture
def sim():
    """A simulated Panda behind a rosbridge server on a free port; stopped (and checked for leftover threads)
    after the test."""
    pytest.importorskip("pybullet")
    pytest.importorskip("websockets")
    from gpc.hardware.rosbridge_sim import RosbridgeSim

    server = RosbridgeSim(port=0).start()
    yield server
    server.stop()
    assert leftover_threads() == [], "threads still running after the test"


@pytest.fixture
def deploy_config(sim, tmp_path):
    """`make(*overrides)`: the deploy config aimed at the sim, logging to tmp_path/logs."""
    from gpc.cli import compose

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


@pytest.fixture
def assert_safe():
    """`check(commands, limits)`: every command finite, inside the joint limits, within one velocity step of
    the previous one, and within max_jump of the arm's position when it arrived (plus the distance the arm
    can travel at the velocity limit in one watchdog timeout, the oldest observation a command may use)."""

    def check(commands, limits):
        assert commands, "the arm received no command"
        positions = np.stack([c.positions for c in commands])
        measured = np.stack([c.measured for c in commands])
        assert np.all(np.isfinite(positions)), "non-finite command"
        assert np.all(positions >= limits.lower) and np.all(positions <= limits.upper), "command beyond joint limits"
        steps = np.abs(np.diff(positions, axis=0))
        assert np.all(steps <= limits.velocity * limits.period + 1e-9), f"velocity step {steps.max():.4f} rad"
        jumps = np.abs(positions - measured)
        assert np.all(jumps <= limits.max_jump + limits.velocity * limits.watchdog_timeout), \
            f"jump {jumps.max():.3f} rad from the measured position"

    return check
