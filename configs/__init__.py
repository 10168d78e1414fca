"""gpc's Hydra configs, shipped inside the package as `gpc.configs` and found through it."""
