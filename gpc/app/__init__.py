"""The commands: `gpc` (cli), the schemas their configs are checked against, composition loading, and the jobs."""
