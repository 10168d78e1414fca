"""Running compositions: vectorized rollouts, the episode store, videos, reports and weight search."""
