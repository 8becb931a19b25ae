#!/usr/bin/env bash
# The GPU measurements of the language-model loop, unattended, one command:
#
#     bash benchmarks/gpu_llm.sh            # on a machine with one CUDA GPU
#
# writes benchmarks/results/llm_throughput-120m-cuda.{md,json},
# llm_throughput-1b-cuda.{md,json} and tofu-gpu.{md,json}, each naming the hardware.
# PYTHON selects the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible')"
"$PY" benchmarks/llm_throughput.py --preset 120m --steps 300 --batch-size 64 --threads 8
"$PY" benchmarks/llm_throughput.py --preset 1b --steps 300 --batch-size 64 --threads 8
"$PY" benchmarks/tofu.py --preset gpu --threads 8
