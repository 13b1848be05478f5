#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv: system libraries for headless MuJoCo
# rendering (EGL, Debian/Ubuntu, when run as root), then the package with its test and serve extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

egl_libs="libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libgl1 libglib2.0-0"
if command -v dpkg-query >/dev/null && ! dpkg-query -W $egl_libs >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $egl_libs
  else
    echo "setup: install the EGL libraries for headless rendering: sudo apt-get install $egl_libs" >&2
  fi
fi

python_bin="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,serve]"

# robosuite warns on every import (three lines on the console) until it has a private macro file: create it
# as its scripts/setup_macros.py does, a copy of the defaults, so no setting changes.
.venv/bin/python - <<'PY'
import shutil
from importlib.util import find_spec
from pathlib import Path

package = Path(find_spec("robosuite").submodule_search_locations[0])
if not (package / "macros_private.py").exists():
    shutil.copyfile(package / "macros.py", package / "macros_private.py")
PY
