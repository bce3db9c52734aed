#!/usr/bin/env bash
# GPU acceptance check for one CUDA GPU (H100/H200 class), offline (no hub access): what must work before a rented
# box spends hours on a real Qwen run. Each stage is timed; the table (stage, seconds, status) and every stage's log
# are written to the output directory, also when a stage fails (the script then stops with that stage's exit code).
#
#   1. the tiny-cue preset (the first tiny one, quick to build) end to end on CUDA in bf16: `make train` (short GRPO
#      run, vLLM colocate), resumed for two more steps (RESUME=1), + `make analyze`;
#   2. the Qwen-shaped rehearsal: a 24-layer Qwen2.5-0.5B stand-in with random weights (train/standin.py), the
#      qwen2.5-0.5b preset on it as one process under DeepSpeed ZeRO-3 (configs/accelerate/zero3.yaml: the sharded
#      save the 3B recipe depends on), vLLM colocate, the preset's 1024-token completions, fewer prompts and steps,
#      generated data instead of the hub split; resumed after step 2 for two more steps; + `make analyze
#      APRESET=qwen2.5-0.5b` with shorter rollouts;
#   3. the GPU rows of `make bench`: analysis.bench on CUDA with a random Qwen2.5-0.5B-sized model.
# After each run, scripts/check_run.py reads what it wrote (non-empty checkpoints at every step, one evaluation per
# checkpoint with rates in [0, 1], a finite loss per step, resume state in the last checkpoint only, the chosen
# checkpoints analysed, the report's figures embedded, weights changed once a gradient was logged): an exit code of 0
# alone says only that a job ended. The stage limits (LIMIT below) add up to the check's budget (480 s of device time);
# the dry run prints them.
#
# Usage: scripts/gpu_check.sh [OUT_DIR]    (default: $OUT, else gpu-check/); the runs go under OUT_DIR/work.
#        GPU_CHECK_DRY_RUN=1 scripts/gpu_check.sh [OUT_DIR]: on any host, validates every stage's command instead
#        (train stages with DRY_RUN=1, analysis configs loaded, a 1-layer stand-in built); nothing is trained.
# The Python environment is the repository's .venv (`make setup` on the GPU box, before it goes offline); make is
# told not to redo setup (-o), so a copied working tree with newer file times does not try to reach PyPI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT_DIR="$(mkdir -p "${1:-${OUT:-gpu-check}}" && cd "${1:-${OUT:-gpu-check}}" && pwd)"
WORK="$OUT_DIR/work"
LOGS="$OUT_DIR/logs"
DRY="${GPU_CHECK_DRY_RUN:-0}"
PY="${PY:-$ROOT/.venv/bin/python}"
MAKE=(make -o .venv/.setup-stamp EXTRA=gpu)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$WORK" "$LOGS"
ROWS="$OUT_DIR/timings.tsv"
printf 'stage\tseconds\tstatus\n' >"$ROWS"

table() {  # timings.tsv -> timings.md, printed too
  {
    echo "| stage | seconds | status |"
    echo "|---|---:|---|"
    tail -n +2 "$ROWS" | awk -F'\t' '{printf "| %s | %s | %s |\n", $1, $2, $3}'
  } >"$OUT_DIR/timings.md"
  echo
  cat "$OUT_DIR/timings.md"
}
trap table EXIT

# stage NAME LIMIT_S CMD...: run CMD (output in logs/NAME.log) for at most LIMIT_S seconds, and never past the
# whole check's budget (GPU_CHECK_BUDGET_S, default 480 s), and record its time and status.
BUDGET="${GPU_CHECK_BUDGET_S:-480}"
START=$(date +%s)
stage() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  if [ "$left" -lt "$limit" ]; then limit=$left; fi
  if [ "$limit" -lt 5 ]; then
    printf '%s\t0\tNOT RUN (budget of %ss spent)\n' "$name" "$BUDGET" >>"$ROWS"
    echo "-- $name not run: the check's budget of ${BUDGET}s is spent (GPU_CHECK_BUDGET_S)"
    exit 124
  fi
  echo "== $name (limit ${limit}s): $*"
  local t0 rc=0
  t0=$(date +%s.%N)
  timeout --kill-after=20 "$limit" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  local secs
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  if [ "$rc" -eq 0 ]; then
    printf '%s\t%s\tok\n' "$name" "$secs" >>"$ROWS"
    return 0
  fi
  local why="exit $rc"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then why="timed out after ${limit}s"; fi
  printf '%s\t%s\tFAILED (%s)\n' "$name" "$secs" "$why" >>"$ROWS"
  echo "-- $name failed ($why); last lines of $LOGS/$name.log:"
  tail -n 40 "$LOGS/$name.log"
  exit "$rc"
}

# The runs (their overrides are shared by the real check and its dry run). The Qwen run keeps the preset's
# 1024-token completions and its per-device micro-batch (64 x 8 / 32 accumulation = 16 completions; here 16 x 8 / 8),
# so its memory peak is the real run's; only the number of prompts, steps and evaluated problems shrinks.
TINY_TRAIN="output_root=$WORK run_name=tiny-cuda data.out_dir=$WORK/data-tiny base_dir=$WORK/tiny-base-{precision} \
device=cuda grpo.precision=bf16 base.steps=400 grpo.steps=4 save_every=2 eval.problems=100"
# the analyses read the first and last checkpoints only (one vLLM engine start each; check_run.py follows `steps`)
TINY_ANALYZE="device=cuda rollout.problems=100 steering.problems=50 fixed.rollouts=100 steps=[0,6]"
QWEN_TRAIN="model=$WORK/models/qwen-standin output_root=$WORK run_name=qwen-standin data.source=generate \
data.train_size=4000 data.test_size=64 data.out_dir=$WORK/data-qwen grpo.steps=2 save_every=2 \
grpo.prompts_per_step=16 grpo.num_generations=8 grpo.gradient_accumulation_steps=8 eval.problems=64 \
launch.accelerate_config=configs/accelerate/zero3.yaml"
QWEN_ANALYZE="rollout.problems=40 rollout.max_new_tokens=256 steering.problems=16 steering.max_new_tokens=256 \
steering.max_flip_cases=64 fixed.rollouts=40 components.free_problems=8 components.free_max_new_tokens=128 steps=[0,4]"
BENCH=(-m analysis.bench --device cuda --arch qwen2.5-0.5b --precision bf16 --section analysis-cuda --skip-memory
  --repeats 1 --new-tokens 64 --out "$OUT_DIR/bench.json")

# The real check's stages in order, each with its limit in seconds: one table for the run and for the dry run's plan.
ORDER=(preflight tiny-train tiny-resume tiny-analyze tiny-check standin-build qwen-train qwen-resume qwen-analyze
  qwen-check bench-cuda)
declare -A LIMIT=([preflight]=30 [tiny-train]=70 [tiny-resume]=40 [tiny-analyze]=55 [tiny-check]=10 [standin-build]=25
  [qwen-train]=110 [qwen-resume]=60 [qwen-analyze]=50 [qwen-check]=10 [bench-cuda]=20)
plan() {  # the real check's stages and limits -> plan.tsv, printed too
  local total=0 name
  printf 'stage\tlimit_s\n' >"$OUT_DIR/plan.tsv"
  for name in "${ORDER[@]}"; do
    printf '%s\t%s\n' "$name" "${LIMIT[$name]}" >>"$OUT_DIR/plan.tsv"
    total=$((total + LIMIT[$name]))
  done
  echo "planned stages (limit s): $(tail -n +2 "$OUT_DIR/plan.tsv" | tr '\t\n' '= ')-> ${total} s of ${BUDGET} s"
}

# the dry run of `make analyze`: the analysis preset plus the overrides load and validate
LOAD_ANALYSIS=("$PY" -c 'import sys; from analysis.config import load_analysis_config as load
load(sys.argv[1], sys.argv[2:]); print("analysis config OK:", sys.argv[1], *sys.argv[2:])')

if [ "$DRY" = 1 ]; then
  stage tiny-train-dry 120 "${MAKE[@]}" train PRESET=tiny-cue DRY_RUN=1 ARGS="$TINY_TRAIN"
  # shellcheck disable=SC2086  # the override strings split into key=value words on purpose
  stage tiny-analyze-dry 60 "${LOAD_ANALYSIS[@]}" tiny-cue $TINY_ANALYZE
  stage standin-build-dry 300 "$PY" -m train.standin --out "$WORK/models/qwen-standin" --layers 1
  stage qwen-train-dry 120 "${MAKE[@]}" train PRESET=qwen2.5-0.5b DRY_RUN=1 ARGS="$QWEN_TRAIN"
  # shellcheck disable=SC2086
  stage qwen-analyze-dry 60 "${LOAD_ANALYSIS[@]}" qwen2.5-0.5b $QWEN_ANALYZE
  stage bench-args-dry 60 "$PY" "${BENCH[@]}" --help
  plan
  exit 0
fi

stage preflight "${LIMIT[preflight]}" "$PY" -c 'import torch, vllm; assert torch.cuda.is_available(), "no CUDA device visible"
print(torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported(), "vllm", vllm.__version__)'
stage tiny-train "${LIMIT[tiny-train]}" "${MAKE[@]}" train PRESET=tiny-cue ARGS="$TINY_TRAIN"
stage tiny-resume "${LIMIT[tiny-resume]}" "${MAKE[@]}" train PRESET=tiny-cue RESUME=1 ARGS="$TINY_TRAIN grpo.steps=6"
stage tiny-analyze "${LIMIT[tiny-analyze]}" "${MAKE[@]}" analyze APRESET=tiny-cue RUN="$WORK/tiny-cuda" ARGS="$TINY_ANALYZE"
stage tiny-check "${LIMIT[tiny-check]}" "$PY" scripts/check_run.py "$WORK/tiny-cuda" --analysed
stage standin-build "${LIMIT[standin-build]}" "$PY" -m train.standin --out "$WORK/models/qwen-standin"
stage qwen-train "${LIMIT[qwen-train]}" "${MAKE[@]}" train PRESET=qwen2.5-0.5b ARGS="$QWEN_TRAIN"
stage qwen-resume "${LIMIT[qwen-resume]}" "${MAKE[@]}" train PRESET=qwen2.5-0.5b RESUME=1 ARGS="$QWEN_TRAIN grpo.steps=4"
stage qwen-analyze "${LIMIT[qwen-analyze]}" "${MAKE[@]}" analyze APRESET=qwen2.5-0.5b RUN="$WORK/qwen-standin" ARGS="$QWEN_ANALYZE"
stage qwen-check "${LIMIT[qwen-check]}" "$PY" scripts/check_run.py "$WORK/qwen-standin" --analysed
stage bench-cuda "${LIMIT[bench-cuda]}" "$PY" "${BENCH[@]}"
