"""Soak test of `gpc deploy`'s machinery: minutes of 50 Hz control of the simulated arm on loopback.

The simulated arm and its rosbridge server run in their own process (as a robot's bridge would, with
real-time scheduling where allowed, so that the times it stamps on arriving commands are true); this process
runs the deploy job (the composed rehearsal policy, safety layer, control loop, roslibpy client) and samples
its own resident memory. Reported: commands published, deadline misses, chunk latency percentiles, safety
events, dropped messages; the commands as the arm received them (gaps between arrivals, and the fastest
step over its gap against the velocity limit); and memory at the start and end of the run (growth would mean
a leak). `--camera` adds a 1 MB raw camera topic (a still picture, re-sent) that the deploy subscribes to.

    OMP_NUM_THREADS=1 python benchmarks/deploy_soak.py [--minutes 10] [--rate 50] [--camera --camera-hz 30]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from gpc.app.cli import compose
from gpc.hardware.deploy_job import run
from gpc.hardware.robot_config import robot_config
from gpc.hardware.rosbridge_sim import SimProcess

CAMERA_OPTIONS = {"camera": "raw", "camera_size": "148x108", "camera_scale": 4, "camera_still": True}  # 592x432
CAMERA_ROBOT = "[{name:front,topic:/camera/image,type:sensor_msgs/Image,max_bytes:2097152}]"


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=50.0, help="joint-state rate of the simulated arm (Hz)")
    parser.add_argument("--camera", action="store_true", help="add a 1 MB raw camera topic")
    parser.add_argument("--camera-hz", type=float, default=30.0)
    parser.add_argument("--log-dir", default=None, help="deploy logs (default: a temporary folder)")
    args = parser.parse_args()
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="deploy_soak_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    options = {**CAMERA_OPTIONS, "camera_rate": args.camera_hz} if args.camera else {}
    sim = SimProcess(log=log_dir / "sim.log", rate=args.rate, record_limit=5000, **options).start()
    samples: list[tuple[float, float]] = []
    # Arrival times and positions of every command the arm received, in arrays filled up front so that
    # recording them does not count as growth of this process.
    capacity = int(args.minutes * 60 * 50 * 1.2) + 1000
    received, positions = np.full(capacity, np.nan), np.full((capacity, len(sim.joint_names)), np.nan)
    stalls = np.zeros(capacity)  # how long the arm's loop had not run before it read each command
    count = 0
    done = threading.Event()

    def fetch():
        """The commands received since the last fetch (the simulator keeps the last 5000)."""
        nonlocal count
        for command in sim.commands(count):
            received[count], positions[count], stalls[count] = command.received, command.positions, command.stall
            count += 1

    def sample():
        """Memory and the commands the arm received, every 5 s."""
        while not done.wait(5.0):
            samples.append((time.monotonic(), rss_mib()))
            fetch()

    try:
        overrides = [f"port={sim.port}", f"duration_s={args.minutes * 60}", f"log_dir={log_dir}"]
        overrides += [f"robot.topics.cameras={CAMERA_ROBOT}"] if args.camera else []
        config = compose("deploy", overrides)
        sim_rss_start, rss_before = rss_mib(sim.process.pid), rss_mib()
        sampler = threading.Thread(target=sample, daemon=True)
        began = time.monotonic()
        sampler.start()
        summary = run(config, "configs/deploy.yaml")
        done.set()
        sampler.join()
        fetch()
        sim_rss_end, rss_end = rss_mib(sim.process.pid), rss_mib()
        realtime = sim.realtime
    finally:
        sim.stop()
    limits = robot_config(config.robot, "configs/deploy.yaml").limits
    gaps = np.diff(received[:count])
    speed = np.abs(np.diff(positions[:count], axis=0)) / np.maximum(gaps, 1e-6)[:, None]
    ratio = (speed / limits.velocity).max(axis=1)
    steady = [(t, m) for t, m in samples if t - began >= 60] or samples
    slope = np.polyfit([t for t, _ in steady], [m for _, m in steady], 1)[0] * 60 if len(steady) > 2 else float("nan")
    ticks = max(summary["ticks"], 1)
    latency, compute = summary["latency_ms"], summary["compute_ms"]
    camera = f", a 1 MB camera at {args.camera_hz:g} Hz" if args.camera else ""
    rows = [
        ("run", f"{summary['seconds'] / 60:.2f} min, joint states at {args.rate:g} Hz{camera}, control at 50 Hz, "
                "loopback"),
        ("control ticks", summary["ticks"]),
        ("commands published", f"{summary['commands_published']} ({summary['holds']} holds); the arm received "
                               f"{count}"),
        ("commands not written", f"{summary['commands_replaced']} replaced, {summary['commands_late']} late; "
                                 f"{summary['ticks_too_soon']} ticks within min_command_interval_s"),
        ("deadline misses", f"{summary['deadline_misses']} ({100 * summary['deadline_misses'] / ticks:.3f} % "
                            "of ticks)"),
        ("ticks without an action", summary["starved_ticks"]),
        ("arrival gaps p50/p99/max", " / ".join(f"{np.percentile(gaps, q) * 1e3:.1f}" for q in (50, 99, 100))
         + f" ms; {int((gaps > 1.5 * limits.period).sum())} over 1.5 periods"),
        ("fastest step on arrival", f"{ratio.max():.3f} x the velocity limit (step / arrival gap; "
                                    f"{int((ratio > 1).sum())} steps over 1x)"),
        ("arm's receive times", ("real-time scheduled" if realtime else "normally scheduled (late under load)")
         + f"; {int((stalls[:count] > 0).sum())} read after a stall of its loop (longest "
           f"{stalls[:count].max(initial=0) * 1e3:.1f} ms)"),
        ("chunks", summary["chunks"]),
        ("chunk latency p50/p95/p99", " / ".join(f"{latency[k]:.1f}" for k in ("p50", "p95", "p99")) + " ms"),
        ("inference p50/p95/p99", " / ".join(f"{compute[k]:.1f}" for k in ("p50", "p95", "p99")) + " ms"),
        ("disconnects", summary["disconnects"]),
        ("safety events", ", ".join(f"{k} {v}" for k, v in summary["safety_events"].items()) or "none"),
        ("dropped messages", ", ".join(f"{k} {v}" for k, v in summary["dropped_messages"].items()) or "none"),
        ("camera frames superseded", summary["camera_frames_superseded"] or "-"),
        ("RSS deploy: before / first sample / end",
         f"{rss_before:.1f} / {samples[0][1] if samples else float('nan'):.1f} / {rss_end:.1f} MiB"),
        ("RSS deploy growth from minute 1", f"{steady[-1][1] - steady[0][1]:+.1f} MiB (slope {slope:+.3f} MiB/min)"
         if steady else "-"),
        ("RSS simulator: start / end", f"{sim_rss_start:.1f} / {sim_rss_end:.1f} MiB"),
        ("logs", str(log_dir)),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"deploy soak (torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}, from OMP_NUM_THREADS)")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
