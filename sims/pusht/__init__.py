"""PushT (gym-pusht) as a `gpc` simulator: dict-observation env, scripted expert, demo writer."""
