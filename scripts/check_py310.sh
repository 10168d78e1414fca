#!/usr/bin/env bash
# gpc's core (no extras) on Python 3.10, the Python of RoboTwin 2.0's environment (its script/_install.sh), so that
# `pip install gpc` into that environment neither fails nor replaces RoboTwin's own pins.
# Usage: bash scripts/check_py310.sh VENV_DIR [GPC_PYTHON]
#   Makes VENV_DIR with Python 3.10 (PYTHON310, default python3.10) and resolves the core's dependencies with its
#   pip (--dry-run: metadata only, nothing installed): alone, where zarr and gymnasium must not appear, and next to
#   the pins of RoboTwin's script/requirements.txt that gpc's dependencies touch, where gymnasium must stay 0.29.1
#   and zarr 2. With GPC_PYTHON (the python of an environment with gpc and pytest), it then installs only numpy and
#   pyyaml into VENV_DIR and runs RoboTwin's side of client/server mode there against gpc's server under
#   GPC_PYTHON (tests/sims/test_robotwin.py, ROBOTWIN_PYTHON). The core itself is not installed on 3.10: PyPI's
#   torch for it is a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:?usage: bash scripts/check_py310.sh VENV_DIR [GPC_PYTHON]}"
python310="${PYTHON310:-python3.10}"
"$python310" -c "" 2>/dev/null || { echo "check_py310: $python310 does not run (set PYTHON310)" >&2; exit 2; }
mkdir -p "$venv"
venv="$(cd "$venv" && pwd)"
[ -x "$venv/bin/python" ] || "$python310" -m venv "$venv"
"$venv/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 10), sys.version' ||
  { echo "check_py310: $venv is not a Python 3.10 environment" >&2; exit 2; }
report="$(mktemp -d)"
trap 'rm -rf "$report"' EXIT

resolve() {  # resolve NAME REQUIREMENTS...: pip's install report of the project plus REQUIREMENTS, for Python 3.10
  local name="$1"
  shift
  "$venv/bin/python" -m pip install -q --dry-run --ignore-installed --prefer-binary \
    --report "$report/$name.json" . "$@"
}

# RoboTwin 2.0 (stable_2.0) script/requirements.txt: the pins that share or constrain gpc's dependencies.
robotwin_pins=("torch==2.4.1" "gymnasium==0.29.1" "zarr<3" "scipy==1.10.1" "sapien==3.0.0b1" "mplib==0.2.1"
               "open3d==0.18.0" "trimesh==4.4.3" "transforms3d==0.4.2" "imageio==2.34.2" "huggingface_hub==0.25.0")
resolve core
resolve robotwin "${robotwin_pins[@]}"
"$venv/bin/python" - "$report" <<'EOF'
import json, sys
from pathlib import Path

def installed(name):
    report = json.loads((Path(sys.argv[1]) / f"{name}.json").read_text())
    return {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"] for i in report["install"]}

core, robotwin = installed("core"), installed("robotwin")
extra = sorted({"zarr", "gymnasium"} & set(core))
assert not extra, f"the core on Python 3.10 pulls in {extra}"
assert robotwin["gymnasium"] == "0.29.1", f"gymnasium {robotwin['gymnasium']} replaces RoboTwin's 0.29.1"
assert robotwin["zarr"].startswith("2."), f"zarr {robotwin['zarr']} replaces RoboTwin's zarr 2"
print(f"core on Python 3.10 resolves: {len(core)} packages, torch {core['torch']}, numpy {core['numpy']}, "
      f"no zarr or gymnasium")
print(f"core beside RoboTwin's pins resolves: torch {robotwin['torch']}, numpy {robotwin['numpy']}, "
      f"diffusers {robotwin['diffusers']}, gymnasium {robotwin['gymnasium']}, zarr {robotwin['zarr']}")
EOF

if [ -n "${2:-}" ]; then
  "$venv/bin/python" -m pip install -q "numpy<2" pyyaml  # RoboTwin's environment keeps numpy 1 (its open3d)
  ROBOTWIN_PYTHON="$venv/bin/python" "$2" -m pytest -p no:cacheprovider -q tests/sims/test_robotwin.py \
    -k eval_server_script
fi
