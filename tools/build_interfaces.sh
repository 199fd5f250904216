#!/usr/bin/env bash
# Build the ROS 2 interface packages that are not on PyPI (vision_msgs, tf2_msgs) from the .msg
# definitions under tools/interfaces/<pkg> with the PyPI rosidl toolchain and Debian's cmake, and
# install them into the virtual environment $VENV (default .venv). See ../shared/ROS_ENV.md.
#
# Only where `import <pkg>.msg` fails: a real ROS 2 install (or a package from elsewhere) is never
# overwritten. A package built here carries a stamp of its definitions; when the definitions
# change it is rebuilt, otherwise this script returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

die() { echo "[interfaces] ERROR: $*" >&2; exit 1; }

venv_arg=${VENV:-.venv}
VENV=$(cd "$venv_arg" 2>/dev/null && pwd) || die "virtual environment '$venv_arg' does not exist (run tools/setup_env.sh)"
py="$VENV/bin/python"
[ -x "$py" ] || die "$py is missing: '$VENV' is not a virtual environment"

# A python started from another bootstrapped venv would hand its LD_LIBRARY_PATH and re-exec guard
# down to us; start clean so that $VENV's own bootstrapper (a .pth in the ROS wheels) sets them.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
export LD_LIBRARY_PATH="$VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$VENV/bin:$PATH"
# Build against the venv only, even from a shell where a ROS distro is sourced (no mixing).
unset CMAKE_PREFIX_PATH AMENT_PREFIX_PATH COLCON_PREFIX_PATH

PACKAGES=(vision_msgs tf2_msgs)

stamp_of() {  # hash of everything that defines the package
  (cd "tools/interfaces/$1" && find . -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16
}

check_toolchain() {
  command -v cmake >/dev/null || die "cmake not found: install Debian's cmake and a C/C++ compiler (apt-get install cmake g++)"
  command -v cc >/dev/null || command -v gcc >/dev/null || die "no C compiler found (apt-get install gcc g++)"
  for d in ament_cmake rosidl_default_generators python_cmake_module std_msgs geometry_msgs builtin_interfaces; do
    [ -d "$VENV/share/$d" ] || die "$VENV/share/$d is missing: install the rosidl toolchain wheels first (pip install -r tools/requirements.txt)"
  done
  "$py" -c "import catkin_pkg, numpy" 2>/dev/null || die "catkin_pkg/numpy not importable in $VENV (pip install -r tools/requirements.txt)"
}

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
toolchain_checked=0

for pkg in "${PACKAGES[@]}"; do
  src="tools/interfaces/$pkg"
  [ -f "$src/CMakeLists.txt" ] || die "$src/CMakeLists.txt is missing"
  stamp=$(stamp_of "$pkg")
  stamp_file="$VENV/share/$pkg/.imkd-interfaces-stamp"
  if "$py" -c "import $pkg.msg" 2>/dev/null; then
    if [ ! -f "$stamp_file" ]; then
      echo "[interfaces] $pkg: importable from elsewhere (e.g. a ROS 2 install), not built here"
      continue
    fi
    if [ "$(cat "$stamp_file")" = "$stamp" ]; then
      echo "[interfaces] $pkg: up to date"
      continue
    fi
    echo "[interfaces] $pkg: definitions changed, rebuilding"
  fi

  if [ "$toolchain_checked" = 0 ]; then check_toolchain; toolchain_checked=1; fi
  build="$repo/build/interfaces/$pkg"
  # A cache configured for another venv would keep that venv's package paths: start over.
  if [ -f "$build/CMakeCache.txt" ] && ! grep -qx "CMAKE_INSTALL_PREFIX:PATH=$VENV" "$build/CMakeCache.txt"; then
    rm -rf "$build"
  fi
  t0=$(date +%s)
  log="$build.log"
  mkdir -p "$(dirname "$build")"
  echo "[interfaces] $pkg: building into $VENV (log: ${log#"$repo"/})"
  if ! {
    cmake -S "$src" -B "$build" "${generator[@]}" \
      -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$VENV" \
      -DCMAKE_INSTALL_PREFIX="$VENV" \
      -DCMAKE_INSTALL_RPATH="$VENV/lib" \
      -DBUILD_TESTING=OFF \
      -DPython3_EXECUTABLE="$py" \
      -DPython3_FIND_VIRTUALENV=ONLY &&
    cmake --build "$build" --parallel "$(nproc)" &&
    cmake --install "$build"
  } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "$pkg: build failed (full log: $log)"
  fi
  # ament_cmake_python installs into $VENV/lib/pythonX.Y/site-packages, which the venv imports
  # without sourcing anything; verify that rather than assume it.
  if ! err=$("$py" -c "import $pkg.msg" 2>&1); then
    echo "$err" >&2
    die "$pkg: built and installed, but 'import $pkg.msg' still fails in $VENV"
  fi
  echo "$stamp" > "$stamp_file"
  echo "[interfaces] $pkg: built and installed in $(( $(date +%s) - t0 )) s"
done
