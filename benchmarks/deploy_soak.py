"""Soak test of `gpc deploy`'s machinery: minutes of 50 Hz control of the simulated arm on loopback.

The simulated arm and its rosbridge server run in their own process (as a robot's bridge would); this
process runs the deploy job (the composed rehearsal policy, safety layer, control loop, roslibpy client) and
samples its own resident memory. Reported: commands published, deadline misses, chunk latency percentiles,
safety events, and memory at the start and end of the run (growth would mean a leak).

    OMP_NUM_THREADS=1 python benchmarks/deploy_soak.py [--minutes 10] [--rate 50]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from gpc.cli import compose
from gpc.hardware.deploy_job import run


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


def start_sim(rate: float, log: Path) -> tuple[subprocess.Popen, int]:
    """The simulated arm on a free port, in a child process; returns it and its port."""
    sim = subprocess.Popen([sys.executable, "-m", "gpc.hardware.rosbridge_sim", "--port", "0", "--rate", str(rate)],
                           stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
    for line in sim.stdout:
        if line.startswith("rosbridge sim listening on ws://"):
            return sim, int(line.split()[4].rsplit(":", 1)[1])
    raise RuntimeError(f"the simulator did not start; see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=50.0, help="joint-state rate of the simulated arm (Hz)")
    parser.add_argument("--log-dir", default=None, help="deploy logs (default: a temporary folder)")
    args = parser.parse_args()
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="deploy_soak_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    sim, port = start_sim(args.rate, log_dir / "sim.log")
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample_memory():
        while not done.wait(5.0):
            samples.append((time.monotonic(), rss_mib()))

    try:
        config = compose("deploy", [f"port={port}", f"duration_s={args.minutes * 60}", f"log_dir={log_dir}"])
        sim_rss_start, rss_before = rss_mib(sim.pid), rss_mib()
        sampler = threading.Thread(target=sample_memory, daemon=True)
        began = time.monotonic()
        sampler.start()
        summary = run(config, "configs/deploy.yaml")
        done.set()
        sim_rss_end, rss_end = rss_mib(sim.pid), rss_mib()
    finally:
        sim.terminate()
        sim.wait(10)
    steady = [(t, m) for t, m in samples if t - began >= 60] or samples
    slope = np.polyfit([t for t, _ in steady], [m for _, m in steady], 1)[0] * 60 if len(steady) > 2 else float("nan")
    ticks = max(summary["ticks"], 1)
    latency, compute = summary["latency_ms"], summary["compute_ms"]
    rows = [
        ("run", f"{summary['seconds'] / 60:.2f} min, joint states at {args.rate:g} Hz, control at 50 Hz, loopback"),
        ("control ticks", summary["ticks"]),
        ("commands published", f"{summary['commands_published']} ({summary['holds']} holds)"),
        ("deadline misses", f"{summary['deadline_misses']} ({100 * summary['deadline_misses'] / ticks:.3f} % "
                            "of ticks)"),
        ("ticks without an action", summary["starved_ticks"]),
        ("chunks", summary["chunks"]),
        ("chunk latency p50/p95/p99", " / ".join(f"{latency[k]:.1f}" for k in ("p50", "p95", "p99")) + " ms"),
        ("inference p50/p95/p99", " / ".join(f"{compute[k]:.1f}" for k in ("p50", "p95", "p99")) + " ms"),
        ("disconnects", summary["disconnects"]),
        ("safety events", ", ".join(f"{k} {v}" for k, v in summary["safety_events"].items()) or "none"),
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
