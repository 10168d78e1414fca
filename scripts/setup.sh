#!/usr/bin/env bash
# Creates a virtual environment with gpc and everything its tests and PushT job need, CPU only.
# Usage: bash scripts/setup.sh [VENV_DIR]   (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# The CPU build of torch first: a bare `torch` from PyPI is a multi-GB CUDA build. It comes from a local wheel
# folder in pip's config (find-links) where there is one, else from PyTorch's CPU index; its dependencies come
# with gpc's on the next line.
"$venv/bin/python" -m pip install -q --no-deps --no-index "torch==2.13.0" 2>/dev/null ||
  "$venv/bin/python" -m pip install -q --no-deps --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
"$venv/bin/python" -m pip install -q -e ".[sims,export,vla,dist,ros,robotwin,aloha,serve,dev]"
# Robomimic's simulator. robosuite 1.5.2 pins mink 0.0.5, which declares numpy<2 yet runs on numpy 2
# (tests/sims/test_robomimic.py passes on it): installed without its declared dependencies, so the venv keeps
# numpy 2 and zarr 3.1.6; its other dependencies come next. `pip install -e ".[robomimic]"` instead resolves
# to numpy 1.26 and zarr 3.1.5, which also works.
"$venv/bin/python" -m pip install -q --no-deps "robosuite==1.5.2" "mink==0.0.5"
"$venv/bin/python" -m pip install -q "numba>=0.60" "qpsolvers[quadprog]>=4.3.1" "pynput>=1.7" "termcolor>=2.0"
