#!/usr/bin/env bash
# Creates .venv/ at the repository root when it is missing and installs volbmd with everything the
# tests need (Debian packages for headless napari and the DICOM validators dicom3tools and dcmtk
# included, when run as root with apt-get).
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(xvfb xauth libxcb-icccm4 libxcb-keysyms1 libgl1 libegl1 libgl1-mesa-dri libxkbcommon-x11-0 libxcb-cursor0
              dicom3tools dcmtk)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: warning: missing Debian packages for headless napari tests: ${missing[*]}" >&2
  fi
fi

python_bin=$(command -v python3.11 || command -v python3)
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $python_bin"
  "$python_bin" -m venv .venv
  .venv/bin/python -m pip install -q -U pip
fi
# torch and torchvision are pinned together in pyproject.toml (a mismatch breaks nnU-Net).
.venv/bin/python -m pip install -q -e ".[test]"
echo "setup: ready ($(.venv/bin/python -c 'import volbmd; print("volbmd", volbmd.__version__)'))"
