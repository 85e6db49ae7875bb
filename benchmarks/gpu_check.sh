#!/usr/bin/env bash
# What a machine with a GPU says about training speed, in under 8 minutes (issue 27):
#
#   1. steps/s and peak GPU memory of HGN++ and the conv HGN at the `paper` profile on
#      one GPU, bf16 autocast off and on (benchmarks/bench_train.py: the trainer's step);
#   2. a paper-size store (50,000 + 1 pendulum sequences of 31 frames at 64×64, written
#      by `hgn data generate`) and the out-of-core loader's rate on it
#      (benchmarks/bench_data.py --loader);
#   3. with two GPUs or more: the conv HGN at `paper` trained for a few steps by DDP with
#      NCCL under torchrun (`hgn train`, one process per GPU), its steps/s from the
#      run's metrics log.
#
# Usage, from the repository root (PYTHON defaults to .venv/bin/python, else python3):
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]
#
# OUT_DIR (default: a fresh temporary folder) receives the log (gpu_check.log) and the
# store; the store is removed at the end unless KEEP_STORE=1. A machine without CUDA
# stops at once with a message and status 2.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

GPUS=$("$PYTHON" - <<'EOF'
import sys
try:
    import torch
except ImportError:
    print("gpu_check: PyTorch is not importable with this Python", file=sys.stderr)
    sys.exit(2)
if not torch.cuda.is_available():
    print(
        f"gpu_check: no CUDA device (torch {torch.__version__}, built for CUDA "
        f"{torch.version.cuda}); run this on a machine with a GPU",
        file=sys.stderr,
    )
    sys.exit(2)
print(torch.cuda.device_count())
EOF
) || exit 2

OUT="${1:-$(mktemp -d -t hgn-gpu-check-XXXXXX)}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
STORE="$OUT/pendulum-paper"
start=$SECONDS
say() { echo "$*" | tee -a "$LOG"; }
elapsed() { say "[${1}: $((SECONDS - start)) s so far]"; }

say "# hgn gpu_check $(date -u +%FT%TZ) on $(hostname)"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda); \
[print(f'  cuda:{i}', torch.cuda.get_device_name(i), \
 f'{torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB') \
 for i in range(torch.cuda.device_count())]" | tee -a "$LOG"
say "GPUs: $GPUS, CPU cores: $(nproc)"

say ""
say "## 1. one GPU, profile paper, bf16 autocast off and on (20 timed steps each)"
timeout 200 "$PYTHON" benchmarks/bench_train.py --device cuda --profiles paper \
    --models hgn hgn++ --amp off bf16 --steps 20 --threads 4 2>&1 | tee -a "$LOG" \
    || say "bench_train.py did not finish (status $?)"
elapsed "one GPU"

say ""
say "## 2. a paper-size store and the out-of-core loader"
if [[ ! -e "$STORE" ]]; then
    timeout 120 "$PYTHON" -m hgn data generate --system pendulum --train 50000 --test 1 \
        --size 64 --out "$STORE" --no-progress 2>&1 | tail -n 2 | tee -a "$LOG" \
        || say "hgn data generate did not finish (status $?)"
fi
if [[ -e "$STORE" ]]; then
    timeout 60 "$PYTHON" benchmarks/bench_data.py --loader "$STORE" --rounds 3 \
        --batches 40 2>&1 | tee -a "$LOG" || say "bench_data.py did not finish (status $?)"
fi
elapsed "store and loader"

say ""
if (( GPUS >= 2 )) && [[ -e "$STORE" ]]; then
    say "## 3. DDP with NCCL: the conv HGN at paper on $GPUS GPUs, 60 steps (batch 16 a GPU)"
    RUN="$OUT/ddp-run"
    rm -rf "$RUN"
    timeout 150 "$PYTHON" -m torch.distributed.run --standalone --nproc-per-node "$GPUS" \
        -m hgn train --data "$STORE" --out "$RUN" --profile paper --model hgn \
        --device cuda --steps 60 --no-progress --set train.log_every=20 \
        --set train.checkpoint_every=1000 2>&1 | tail -n 5 | tee -a "$LOG" \
        || say "torchrun did not finish (status $?)"
    if [[ -f "$RUN/metrics.jsonl" ]]; then
        "$PYTHON" - "$RUN/metrics.jsonl" "$GPUS" <<'EOF' | tee -a "$LOG"
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1])]
gpus = int(sys.argv[2])
for entry in lines:
    print(
        f"  step {entry['step']}: {entry['steps_per_s']:.2f} steps/s over the run so far "
        f"({16 * gpus * entry['steps_per_s']:.0f} sequences/s), loss {entry['loss']:.4g}"
    )
EOF
    fi
    elapsed "DDP"
else
    say "## 3. DDP: skipped (one GPU)"
fi

if [[ "${KEEP_STORE:-0}" != 1 ]]; then rm -rf "$STORE" "$OUT/ddp-run"; fi
say ""
say "done in $((SECONDS - start)) s; log: $LOG"
