#!/usr/bin/env bash
# Gathers what a bare GPU machine lacks into .device/ (ignored by git), for the machine that
# the `device` tool lends (Python 3.12 with torch, transformers, peft, accelerate, torchmetrics,
# scikit-learn and scipy; nothing can be downloaded there):
#   .device/whl/            wheels of the packages its image does not hold (diffusers, rouge-score
#                           and their missing dependencies), built for Python 3.12
#   .device/fashion-mnist/  Fashion-MNIST for benchmarks/diffusion.py (Debian's dataset-fashion-mnist)
# About 38 MB, within what travels with the working tree (64 MiB). Then, on the lent machine:
#   run(command="bash benchmarks/gpu_run.sh", carry=[".device"], timeout_s=590)
# benchmarks/gpu_run.sh installs the wheels to /tmp/site and points Erasus at the data itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEST=.device
FASHION=${ERASUS_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
# Versions: the newest whose requirements the lent machine's image meets (huggingface-hub 1.33,
# safetensors 0.8, no defusedxml or lazy-importer there).
WHEELS="diffusers==0.42.1 importlib_metadata==8.7.0 nltk==3.9.1"
SDISTS="rouge-score==0.1.2"   # published as a source archive only: built here into a pure-Python wheel

rm -rf "$DEST/whl"
mkdir -p "$DEST/whl" "$DEST/fashion-mnist"
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST/whl" $WHEELS
# shellcheck disable=SC2086
"$PY" -m pip wheel -q --no-deps -w "$DEST/whl" $SDISTS
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
    if [ ! -f "$FASHION/$f" ]; then
        echo "Fashion-MNIST's $f is not in $FASHION: install Debian's dataset-fashion-mnist (./install.sh does)" \
             "or set ERASUS_FASHION_MNIST to a folder holding the four .gz files." >&2
        exit 1
    fi
    cp "$FASHION/$f" "$DEST/fashion-mnist/"
done
du -sh "$DEST"
ls "$DEST/whl"
