#!/usr/bin/env bash
# One short GPU session: continue the shipped world model's tokenizer, then its dynamics on that tokenizer (the
# LAM frozen), each phase sized to a time budget by a short probe of its own speed, then the env speed benchmark
# on the GPU. Slim checkpoints (weights only, in bf16, each with its metrics.jsonl inside), logs and the benchmark
# land in $OUT (a weights file and a log per phase or arm: the device tool brings back at most 8 files, each < 16
# MiB, so 3 arms without a tokenizer phase, plus the benchmark's 2). TOK_S=0 skips the tokenizer (TOK_STEPS is then
# unused): the dynamics continues on MODEL's tokens. DYN_ARMS trains several dynamics variants at once on the one
# GPU (a small model leaves it mostly idle).
#
#   python scripts/pack_dataset.py --src data/coinrun_hard_sticky --out data/coinrun_device --max-mib 31
#   OUT=/tmp/out bash scripts/device_train.sh                      # on the GPU machine (~9 minutes)
#   DEVICE=cpu TOK_S=20 DYN_S=20 BATCH=2 PROBE=4 SPEED=0 OUT=/tmp/out bash scripts/device_train.sh   # rehearsal
#   TOK_S=0 DYN_ARMS="l4: l8:dynamics.num_layers=8" OUT=/tmp/out bash scripts/device_train.sh   # two arms at once
#   SPEED=0 TOK_S=150 DYN_S=150 TOK_ARMS="base: c16:tokenizer.patch_size=16,tokenizer.conv_channels=64/128/128" \
#     OUT=/tmp/out bash scripts/device_train.sh   # two tokenizer designs from scratch, a dynamics on each (~7 min)
#
# Settings (environment): DATA, RUN, MODEL, PRESET (MODEL's), PYTHON, DEVICE, BATCH (clips per step), TOK_S / DYN_S
# (training seconds per phase; TOK_S=0: no tokenizer phase), TOK_STEPS / DYN_STEPS (this many steps instead of the
# probe's estimate; the phase's time limit, TOK_S / DYN_S x 1.15 + 30 s, still stops it; arms' probes run at once and
# can misjudge the shared GPU), TOK_LR / DYN_LR, PROBE (steps of each speed probe),
# DYN_SET (config overrides of the dynamics phase, as `genie-gym train --set`, space-separated FIELD=VALUE words, e.g.
# DYN_SET="dynamics.num_layers=8": a deeper dynamics grown from MODEL's), DYN_ARMS (space-separated NAME:SETS, SETS
# comma-separated FIELD=VALUE or empty: one dynamics run per arm, all at once, each with its own probe, in RUN/NAME,
# to $OUT/dynamics_NAME_*; DYN_SET applies to every arm; a tuple's elements are written with / in SETS, e.g.
# tokenizer.fsq_levels=5/5/5), TOK_ARMS (space-separated NAME:SETS: tokenizer *designs*,
# each trained from scratch with its SETS, then a dynamics from scratch on its tokens with the same SETS and DYN_SET,
# MODEL's LAM frozen; all tokenizers at once, then all dynamics; to $OUT/tokenizer_NAME_* and $OUT/dynamics_NAME_*:
# 4 files an arm, so 2 arms and SPEED=0 fill the 8 that come back), CACHE_MIB
# (decompressed frames per data worker), SPEED (1: run benchmarks/env_speed.py on the device afterwards).
set -uo pipefail
OUT=${OUT:?set OUT to the folder that receives the results}
DATA=${DATA:-data/coinrun_device}
RUN=${RUN:-runs/device}
MODEL=${MODEL:-genie_gym/assets/world_model.pt}
PRESET=${PRESET:-small}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-64}
TOK_S=${TOK_S:-140}
DYN_S=${DYN_S:-190}
TOK_LR=${TOK_LR:-1e-3}
DYN_LR=${DYN_LR:-6e-4}
PROBE=${PROBE:-60}
TOK_STEPS=${TOK_STEPS:-}
DYN_STEPS=${DYN_STEPS:-}
DYN_SET=${DYN_SET:-}
DYN_ARMS=${DYN_ARMS:-}
TOK_ARMS=${TOK_ARMS:-}
CACHE_MIB=${CACHE_MIB:-2048}
SPEED=${SPEED:-1}
mkdir -p "$OUT"

# Packages the machine lacks travel as wheels in .whl/ (see docs/architecture.md, "Training on a GPU machine").
if ! "$PYTHON" -c "import tyro, zstandard, gymnasium" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing .whl/*.whl failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
common=(--preset "$PRESET" --data "$DATA" --device "$DEVICE" --batch-size "$BATCH" --no-tensorboard --image-every 0
        --ckpt-every 1000 --cache-mib "$CACHE_MIB" --log-every 10)

# steps_for METRICS SECONDS: the probe run's slowest logged steps/s after its first row (start-up) x SECONDS: arms
# probed at once share the GPU only while all of them run, so their last rows can be too fast (no torch here)
steps_for() {
  "$PYTHON" - "$1" "$2" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
row = min(rows[1:] or rows, key=lambda r: r["steps_per_s"])
steps = int(float(sys.argv[2]) * row["steps_per_s"])
print(max(steps, 20))
print(f"probe: {row['frames_per_s']:.0f} frames/s, {row['steps_per_s']:.2f} steps/s -> {steps} steps", file=sys.stderr)
EOF
}

phase() {  # phase NAME LABEL RUN_DIR SECONDS LR STEPS EXTRA... (STEPS empty: as many as the probe's speed fits)
  local name=$1 label=$2 run=$3 seconds=$4 lr=$5 steps=$6; shift 6
  if [ -n "$steps" ]; then
    [[ "$steps" =~ ^[1-9][0-9]*$ ]] || { echo "${label} steps must be a positive integer, got '$steps'"; return 1; }
    echo "no probe: $steps steps set" > "$OUT/${label}_probe.log"
  else
    rm -rf "$run/probe"
    "$PYTHON" -m genie_gym.cli train --phase "$name" "${common[@]}" --out "$run/probe" --steps "$PROBE" \
      --lr "$lr" "$@" > "$OUT/${label}_probe.log" 2>&1 || { tail -30 "$OUT/${label}_probe.log"; return 1; }
    steps=$(steps_for "$run/probe/$name/metrics.jsonl" "$seconds" 2> >(tee -a "$OUT/${label}_probe.log" >&2)) \
      || return 1
  fi
  local limit; limit=$("$PYTHON" -c "print(round($seconds * 1.15 / 60 + 0.5, 2))")
  echo "$label: $steps steps of $BATCH clips (time limit $limit min)"
  "$PYTHON" -m genie_gym.cli train --phase "$name" "${common[@]}" --out "$run" --steps "$steps" --lr "$lr" \
    --time-limit-min "$limit" "$@" > "$OUT/${label}.log" 2>&1 || { tail -30 "$OUT/${label}.log"; return 1; }
  echo "$label: $steps steps of $BATCH clips ($(tail -1 "$OUT/${label}_probe.log"))" >> "$OUT/${label}.log"
  tail -c 400 "$OUT/${label}.log" | tr '\r' '\n' | tail -3
  tail -1 "$run/$name/metrics.jsonl"
  slim "$run" "$name" "$label"  # its weights go to $OUT as soon as it ends: a session cut short keeps what finished
}

# slim RUN_DIR PHASE LABEL: its weights only, in bf16 (no optimiser state; the frozen LAM is the shipped file's), with
# its metrics.jsonl inside, small enough to come back as one file
slim() {
  "$PYTHON" - "$1" "$2" "$OUT/${3}_weights.pt" <<'EOF'
import sys
from pathlib import Path
import torch
from genie_gym.training.checkpoint import checkpoint_bytes, load_checkpoint
run, phase, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
ckpt = load_checkpoint(run / phase / "last.pt")
ckpt["model"] = {phase: {k: v.to(torch.bfloat16) if v.is_floating_point() else v
                         for k, v in ckpt["model"][phase].items()}}
ckpt["optimizer"] = None
ckpt["metrics_jsonl"] = (run / phase / "metrics.jsonl").read_text()
for key in ("format_version", "kind"):
    ckpt.pop(key)
out.write_bytes(checkpoint_bytes(ckpt))
print(out.name, "step", ckpt["step"], f"{out.stat().st_size / 2**20:.1f} MiB")
EOF
}

check_arms() {  # check_arms VAR VALUE: every arm is NAME:SETS with a new NAME (prints the arms, one a line)
  local seen=() arm name
  for arm in $2; do
    name=${arm%%:*}
    [[ "$arm" == *:* && "$name" =~ ^[A-Za-z0-9_-]+$ ]] \
      || { echo "$1: '$arm' is not NAME:SETS (NAME of letters, digits, _ and -; SETS comma-separated)" >&2; return 1; }
    for s in ${seen[@]+"${seen[@]}"}; do
      [ "$s" = "$name" ] && { echo "$1: arm name '$name' given twice" >&2; return 1; }
    done
    seen+=("$name")
    echo "$arm"
  done
}
# every arm checked before any starts
arms=() tok_arms=()
listed=$(check_arms DYN_ARMS "$DYN_ARMS") || exit 1
[ -n "$listed" ] && mapfile -t arms <<< "$listed"
listed=$(check_arms TOK_ARMS "$TOK_ARMS") || exit 1
[ -n "$listed" ] && mapfile -t tok_arms <<< "$listed"
if [ -n "$TOK_ARMS" ] && { [ -n "$DYN_ARMS" ] || [[ "$TOK_S" =~ ^0+(\.0*)?$ ]]; }; then
  echo "TOK_ARMS trains tokenizers from scratch and a dynamics on each: it needs TOK_S > 0 and no DYN_ARMS"; exit 1
fi

t0=$(date +%s)
status=0
if [ -n "$TOK_ARMS" ]; then  # tokenizer designs from scratch, then a dynamics from scratch on each one's tokens
  sets_of() {  # NAME:SETS -> --set FIELD=VALUE ... (a / inside a value is a tuple's comma)
    local sets=${1#*:} a=(); read -r -a a <<< "${sets//,/ }"; [ ${#a[@]} -gt 0 ] && echo "--set ${a[*]//\//,}"
  }
  pids=()
  for arm in "${tok_arms[@]}"; do
    name=${arm%%:*}
    read -r -a arm_set <<< "$(sets_of "$arm")"
    phase tokenizer "tokenizer_$name" "$RUN/$name" "$TOK_S" "$TOK_LR" "$TOK_STEPS" ${arm_set[@]+"${arm_set[@]}"} &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  [ $status = 0 ] || exit 1
  echo "tokenizers done after $(( $(date +%s) - t0 )) s"
  pids=()
  for arm in "${tok_arms[@]}"; do
    name=${arm%%:*}
    read -r -a arm_set <<< "$(sets_of "$arm${DYN_SET:+,${DYN_SET// /,}}")"
    phase dynamics "dynamics_$name" "$RUN/$name" "$DYN_S" "$DYN_LR" "$DYN_STEPS" \
      --tokenizer-ckpt "$RUN/$name/tokenizer/last.pt" --init-from "$MODEL" --init-parts lam --freeze-lam \
      ${arm_set[@]+"${arm_set[@]}"} &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
else
  tokenizer=$MODEL
  if ! [[ "$TOK_S" =~ ^0+(\.0*)?$ ]]; then
    phase tokenizer tokenizer "$RUN" "$TOK_S" "$TOK_LR" "$TOK_STEPS" --init-from "$MODEL" || exit 1
    tokenizer=$RUN/tokenizer/last.pt
    echo "tokenizer done after $(( $(date +%s) - t0 )) s"
  fi
  dyn=(--tokenizer-ckpt "$tokenizer" --init-from "$MODEL" --freeze-lam)
  if [ -z "$DYN_ARMS" ]; then
    dyn_set=()
    [ -n "$DYN_SET" ] && read -r -a dyn_set <<< "--set $DYN_SET"
    phase dynamics dynamics "$RUN" "$DYN_S" "$DYN_LR" "$DYN_STEPS" "${dyn[@]}" ${dyn_set[@]+"${dyn_set[@]}"} \
      || status=1
  else
    pids=()
    for arm in "${arms[@]}"; do
      name=${arm%%:*} sets=${arm#*:}
      arm_set=()
      read -r -a arm_set <<< "$DYN_SET ${sets//,/ }"
      [ ${#arm_set[@]} -gt 0 ] && arm_set=(--set "${arm_set[@]//\//,}")
      phase dynamics "dynamics_$name" "$RUN/$name" "$DYN_S" "$DYN_LR" "$DYN_STEPS" "${dyn[@]}" \
        ${arm_set[@]+"${arm_set[@]}"} &
      pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  fi
fi
echo "dynamics done after $(( $(date +%s) - t0 )) s"
for f in "$OUT"/*_probe.log; do  # each probe's log goes to the end of its phase's
  [ -f "$f" ] || continue
  tr '\r' '\n' < "$f" >> "${f%_probe.log}.log"; rm -f "$f"
done
for f in "$OUT"/*.log; do tr '\r' '\n' < "$f" | grep -v -E "it/s|s/it" | tail -c 100000 > "$f.tmp"; mv "$f.tmp" "$f"; done

if [ "$SPEED" = 1 ]; then
  timeout 100 "$PYTHON" benchmarks/env_speed.py --device "$DEVICE" --no-quality --memory-steps 0 \
    --prompt genie_gym/assets/sketch.png --steps 2 25 --precisions float32 bfloat16 --compiled False \
    --batch-sizes 1 64 256 1024 --seconds 3 --max-seconds 30 --out "$OUT/env_speed_cuda.json" 2>&1 | tail -20
fi
echo "all done after $(( $(date +%s) - t0 )) s"
exit $status
