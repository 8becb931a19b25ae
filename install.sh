#!/usr/bin/env bash
# Erasus set-up: a virtual environment in .venv with Erasus and what it needs.
#   ./install.sh          library + test tools
# On a machine without a GPU, the CPU build of torch 2.13.0 is installed first (any other
# torch request would pull a multi-GB CUDA build). Fashion-MNIST for the benchmark and the
# 20k-image tests comes from Debian's dataset-fashion-mnist package, eSpeak NG for the spoken-digit
# corpus from espeak-ng, and Chromium for the dashboard's browser test from Debian's chromium
# package, when apt is available (as root).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! python -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    python -m pip install -q torch
  else
    python -m pip install -q torch==2.13.0
  fi
fi
python -m pip install -q -e ".[dev]"
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null 2>&1 \
   && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
    || echo "note: could not install Debian's dataset-fashion-mnist; the 20k-image benchmark will say how." >&2
fi
# Debian's eSpeak NG: the audio and speech benchmarks and tests synthesise their spoken-digit corpus with it
if ! command -v espeak-ng >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -qq espeak-ng >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq espeak-ng) >/dev/null 2>&1) \
    || echo "note: could not install Debian's espeak-ng; the spoken-corpus tests will be skipped and say why." >&2
fi
# Debian's Chromium for the dashboard's browser test (Playwright drives it; no browser download)
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1) \
    || echo "note: could not install Debian's chromium; the dashboard's browser test will say how." >&2
fi
echo "Erasus installed in .venv ($(python -c 'import torch; print("torch", torch.__version__)'))."
