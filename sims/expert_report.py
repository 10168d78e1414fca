"""The summary every scripted-expert demo recorder writes next to its store, and the line it prints.

One shape for every sim, so expert success rates are reported alike: attempts, successes with a 95% Wilson
interval, demos kept and their steps, seeds tried and timings.
"""

from __future__ import annotations

from typing import Any, Sequence

from gpc.runtime.stats import wilson_interval


def expert_summary(attempts: int, successes: int, episode_ends: Sequence[int], seed: int, seconds: float,
                   **extra: Any) -> dict[str, Any]:
    """`extra` adds sim-specific fields, or replaces a common one (e.g. a per-attempt time without rendering)."""
    lo, hi = wilson_interval(successes, attempts)
    steps = int(episode_ends[-1]) if len(episode_ends) else 0
    return {
        "attempts": attempts, "successes": successes, "success_rate": successes / attempts,
        "success_rate_ci95": [lo, hi], "demos": len(episode_ends), "total_steps": steps,
        "mean_episode_length": steps / len(episode_ends) if len(episode_ends) else 0.0,
        "seeds": [seed, seed + attempts - 1], "seconds": seconds, "seconds_per_attempt": seconds / attempts,
        **extra,
    }


def describe(summary: dict[str, Any]) -> str:
    lo, hi = summary["success_rate_ci95"]
    return (f"{summary.get('task', 'expert')}: attempts {summary['attempts']}, successes {summary['successes']}, "
            f"success rate {summary['success_rate']:.3f} (95% Wilson CI {lo:.3f}-{hi:.3f}), demos kept "
            f"{summary['demos']}, total steps {summary['total_steps']}, mean episode length "
            f"{summary['mean_episode_length']:.1f}, {summary['seconds_per_attempt']:.2f} s/attempt")
