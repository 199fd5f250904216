#!/usr/bin/env bash
# Build the dev/CI virtual environment (.venv) from pinned versions. Idempotent: when the
# pins and interface definitions are unchanged and the imports work, it returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp_src=$(cat tools/requirements.txt tools/constraints.txt tools/setup_env.sh tools/build_interfaces.sh \
            $(find tools/interfaces -type f | sort) setup.py setup.cfg 2>/dev/null | sha256sum | cut -c1-16)
stamp_file="$VENV/.imkd-setup-stamp"

if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp_src" ] \
   && "$VENV/bin/python" -c "import rclpy, torch, nuscenes, rosbags, cv_bridge, vision_msgs.msg, tf2_msgs.msg, imkd_core, imkd_ros" 2>/dev/null; then
  echo "[setup] $VENV is up to date ($(( $(date +%s) - start )) s)"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip="$VENV/bin/python -m pip --disable-pip-version-check"
# torch==2.13.0 resolves to the local CPU wheel; an unpinned torch would pull GBs of CUDA.
$pip install -q -r tools/requirements.txt -c tools/constraints.txt
# cv-bridge's PyPI metadata asks for a full opencv; the headless one above serves it.
$pip install -q --no-deps cv-bridge==1.13.0.post0
# vision_msgs / tf2_msgs are not on PyPI: build them from tools/interfaces where missing.
VENV="$VENV" bash tools/build_interfaces.sh
# The package itself (editable: console scripts imkd-* point at this checkout).
$pip install -q --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import rclpy, torch, nuscenes, rosbags, cv_bridge, vision_msgs.msg, tf2_msgs.msg, imkd_core, imkd_ros"
echo "$stamp_src" > "$stamp_file"
echo "[setup] $VENV ready in $(( $(date +%s) - start )) s ($(du -sh "$VENV" | cut -f1))"
