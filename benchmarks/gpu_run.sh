#!/usr/bin/env bash
# Every GPU measurement, unattended, in one command and within a time budget:
#
#     bash benchmarks/gpu_run.sh [STEP ...]      # default: llm tofu diffusion smoke clip
#
# Steps (each writes benchmarks/results/<name>.{md,json} naming the hardware):
#   llm        llm_throughput.py, presets 120m and 1b, 300 steps  -> llm_throughput-{120m,1b}-cuda
#   tofu       tofu.py --preset gpu (TOFU forget10 at full size)   -> tofu-gpu
#   diffusion  diffusion.py (concept erasure, Fashion-MNIST)        -> diffusion
#   smoke      gpu_smoke.py (every strategy runs on CUDA)          -> gpu_smoke
#   clip       clip.py --device cuda                               -> clip-cuda
# BUDGET_MIN (default 9) is the whole run's minutes: a step starts only with 1.5 minutes left,
# gets what is left as its limit, and tofu, diffusion and smoke write after every row and stop
# between cells (--max-minutes); they run with --resume, so the next call goes on from the
# partial results file committed with the repository. PYTHON (default python3) is the
# interpreter, THREADS (default 8) its CPU threads; DEVICE=cpu runs the same steps on the CPU
# with the results under /tmp/erasus-gpu-run (a check of this script, not a result).
# TOFU_ARGS and DIFFUSION_ARGS add options to those steps' commands. The diffusion step trains
# its two models of a seed (20,000 steps each) before its first row, on every call (a lent
# machine starts bare): if that outlasts the budget, no row is written; measure the step time in
# the first call's log and pass e.g. DIFFUSION_ARGS="--train-steps 8000" (recorded in the results).
#
# On the machine the `device` tool lends (bare: Python 3.12 with torch; nothing can be
# downloaded there) first run `bash scripts/device_bundle.sh` here, then
#     run(command="bash benchmarks/gpu_run.sh", carry=[".device"], timeout_s=590)
# The wheels in .device/whl are installed to /tmp/erasus-site, Erasus is imported from src/,
# Fashion-MNIST read from .device/fashion-mnist; after every step the results written so far
# and the logs are packed into $OUT/gpu_results.tar.gz (when $OUT is set), so that a call cut
# off still returns them; back here, `tar xzf <files_at>/gpu_results.tar.gz` in the repository
# puts them in benchmarks/results/ to commit (the next call resumes from them).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
THREADS=${THREADS:-8}
BUDGET_MIN=${BUDGET_MIN:-9}
DEVICE=${DEVICE:-cuda}
RESULTS=benchmarks/results
if [ "$DEVICE" = cpu ]; then RESULTS=/tmp/erasus-gpu-run; mkdir -p $RESULTS; fi
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(llm tofu diffusion smoke clip)
for step in "${STEPS[@]}"; do
    case $step in
        llm|tofu|diffusion|smoke|clip) ;;
        *) echo "unknown step '$step': expected llm, tofu, diffusion, smoke or clip" >&2; exit 2 ;;
    esac
done
START=$(date +%s)
DEADLINE=$((START + BUDGET_MIN * 60))
export PYTHONUNBUFFERED=1

if [ -d .device/whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/erasus-site \
        .device/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/erasus-site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$PY" -c "import erasus" 2>/dev/null; then
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -d .device/fashion-mnist ]; then
    export ERASUS_FASHION_MNIST=$PWD/.device/fashion-mnist
fi
if [ "$DEVICE" != cpu ]; then
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')" || exit 1
fi
LOGS=$RESULTS/gpu_logs
mkdir -p "$LOGS"
STAMP=$(mktemp)
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    "$PY" -c "import sys, torch, transformers; print(sys.version.split()[0], 'torch', torch.__version__, 'transformers',
transformers.__version__, 'cuda', torch.cuda.is_available())"
} > "$LOGS/environment.txt" 2>&1
cat "$LOGS/environment.txt"

pack() {  # what this run wrote, and the logs, into $OUT
    if [ -n "${OUT:-}" ]; then
        find "$RESULTS" -type f -newer "$STAMP" -print0 | tar czf "$OUT/gpu_results.tar.gz" --null -T -
    fi
}

left() { echo $(( (DEADLINE - $(date +%s)) )); }

run_step() {  # name, then the command; killed at the budget's end
    local name=$1; shift
    local s
    s=$(left)
    if [ "$s" -lt 90 ]; then
        echo "== $name: skipped, $s s of the budget left" | tee -a "$LOGS/steps.txt"
        return
    fi
    echo "== $name: $* (limit ${s} s)" | tee -a "$LOGS/steps.txt"
    local t0=$SECONDS
    timeout -s INT -k 30 "$s" "$@" 2>&1 | tee "$LOGS/$name.log" | grep -v "it/s\]$"
    echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$LOGS/steps.txt"
    pack
}

mins() {  # --max-minutes for a step that stops between cells: what is left, less 45 s, at least 0.5
    awk -v s="$(left)" 'BEGIN { m = (s - 45) / 60; if (m < 0.5) m = 0.5; printf "%.1f", m }'
}

for step in "${STEPS[@]}"; do
    case $step in
        llm)
            for preset in 120m 1b; do
                run_step "llm-$preset" "$PY" benchmarks/llm_throughput.py --preset $preset --steps 300 --batch-size 64 \
                    --device "$DEVICE" --threads "$THREADS" --out "$RESULTS"
            done ;;
        tofu)
            # shellcheck disable=SC2086
            run_step tofu "$PY" benchmarks/tofu.py --preset gpu --device "$DEVICE" --threads "$THREADS" --out "$RESULTS" \
                --resume --max-minutes "$(mins)" ${TOFU_ARGS:-} ;;
        diffusion)
            # shellcheck disable=SC2086
            run_step diffusion "$PY" benchmarks/diffusion.py --device "$DEVICE" --out "$RESULTS" --resume \
                --max-minutes "$(mins)" ${DIFFUSION_ARGS:-} ;;
        smoke)
            run_step smoke "$PY" benchmarks/gpu_smoke.py --device "$DEVICE" --out "$RESULTS" --resume ;;
        clip)
            run_step clip "$PY" benchmarks/clip.py --device "$DEVICE" --name "clip-$DEVICE" --out "$RESULTS" ;;
    esac
done
pack
rm -f "$STAMP"
