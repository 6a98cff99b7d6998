#!/usr/bin/env bash
# Install everything edge-agent needs on a fresh Debian/Ubuntu machine (run as root or with sudo):
# Debian's DCMTK (real DICOM peers for the tests) and Mosquitto, then the project and its
# test extras with pip. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
command -v storescu >/dev/null 2>&1 || need+=(dcmtk)
command -v mosquitto >/dev/null 2>&1 || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)  # PKCS#11 device-key tests
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)  # collector store tests (initdb/pg_ctl)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
# torch (CPU) is used only by the training code and the export tests; the agent never imports it.
# The pinned version is the one this project trains with.
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q torch==2.13.0
fi
"$PY" -m pip install -q -e '.[test]'
echo "setup: done ($("$PY" -m edge_agent.cli --version))"
