"""RoboTwin 2.0: evaluate a composed gpc policy with RoboTwin's own scripts, and import its collected data.

RoboTwin needs a GPU to render (SAPIEN), so gpc does not run it; `install` writes a policy folder into a
user's RoboTwin checkout whose `deploy_policy.py` hands every chunk to `policy.RoboTwinPolicy`, in RoboTwin's
environment (`script/eval_policy.py`) or, through `client` and `server`, in gpc's own (RoboTwin's client/server mode).
"""
