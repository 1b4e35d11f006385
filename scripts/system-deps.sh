#!/bin/sh
# Make sure the Debian packages behind the given binaries are installed.
# Usage: scripts/system-deps.sh [--soft] binary:package ...  (python3-venv:python3-venv checks venv)
# Installs what is missing when this user may (root or password-less sudo); otherwise prints the
# one command to run and exits 1 (or 0 with --soft, leaving the tests to skip or fail).
soft=0
if [ "$1" = "--soft" ]; then soft=1; shift; fi
missing=""
for pair in "$@"; do
  binary=${pair%%:*}
  package=${pair#*:}
  if [ "$binary" = "python3-venv" ]; then
    # Debian's python3 cannot make a virtualenv without python3-venv (ensurepip).
    python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing="$missing $package"
    continue
  fi
  PATH="$PATH:/usr/sbin:/sbin" command -v "$binary" >/dev/null 2>&1 || missing="$missing $package"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ]; then
  sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo="sudo -n"
else
  echo "Missing system packages:$missing"
  echo "Install them with:  sudo apt-get install -y$missing"
  [ $soft = 1 ] && exit 0 || exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Missing system packages:$missing (install them with your system's package manager)"
  [ $soft = 1 ] && exit 0 || exit 1
fi
echo "Installing system packages:$missing"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q $missing || { $sudo apt-get update -q && $sudo apt-get install -y -q $missing; }
