"""LeRobot checkpoints (`save_pretrained` folders) as gpc parents, with gpc's own networks: configuration,
modeling and processing side by side, as LeRobot lays out a policy."""
