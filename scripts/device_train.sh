#!/usr/bin/env bash
# One short GPU session: continue the shipped world model's tokenizer, then its dynamics on that tokenizer (the
# LAM frozen), each phase sized to a time budget by a short probe of its own speed, then the env speed benchmark
# on the GPU. Slim checkpoints (weights only), logs and the benchmark land in $OUT (at most 8 files, each < 16 MiB).
#
#   python scripts/pack_dataset.py --src data/coinrun_hard_sticky --out data/coinrun_device --max-mib 31
#   OUT=/tmp/out bash scripts/device_train.sh                      # on the GPU machine (~9 minutes)
#   DEVICE=cpu TOK_S=20 DYN_S=20 BATCH=2 PROBE=4 SPEED=0 OUT=/tmp/out bash scripts/device_train.sh   # rehearsal
#
# Settings (environment): DATA, RUN, MODEL, PRESET (MODEL's), PYTHON, DEVICE, BATCH (clips per step), TOK_S / DYN_S
# (training seconds per phase), TOK_STEPS / DYN_STEPS (this many steps instead of the probe's estimate; the phase's
# time limit, TOK_S / DYN_S x 1.15 + 30 s, still stops it), TOK_LR / DYN_LR, PROBE (steps of each speed probe),
# DYN_SET (config overrides of the dynamics phase, as `genie-gym train --set`, space-separated FIELD=VALUE words, e.g.
# DYN_SET="dynamics.num_layers=8": a deeper dynamics grown from MODEL's), CACHE_MIB
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

# steps_for PHASE SECONDS: the probe run's last logged steps/s x SECONDS (no torch: a fast interpreter start)
steps_for() {
  "$PYTHON" - "$RUN/probe_$1/$1/metrics.jsonl" "$2" <<'EOF'
import json, sys
row = [json.loads(line) for line in open(sys.argv[1])][-1]
steps = int(float(sys.argv[2]) * row["steps_per_s"])
print(max(steps, 20))
print(f"probe: {row['frames_per_s']:.0f} frames/s, {row['steps_per_s']:.2f} steps/s -> {steps} steps", file=sys.stderr)
EOF
}

phase() {  # phase NAME SECONDS LR STEPS EXTRA... (STEPS empty: as many as the probe's speed fits in SECONDS)
  local name=$1 seconds=$2 lr=$3 steps=$4; shift 4
  if [ -n "$steps" ]; then
    [[ "$steps" =~ ^[1-9][0-9]*$ ]] || { echo "${name} steps must be a positive integer, got '$steps'"; return 1; }
    echo "no probe: $steps steps set" > "$OUT/${name}_probe.log"
  else
    rm -rf "$RUN/probe_$name"
    "$PYTHON" -m genie_gym.cli train --phase "$name" "${common[@]}" --out "$RUN/probe_$name" --steps "$PROBE" \
      --lr "$lr" "$@" > "$OUT/${name}_probe.log" 2>&1 || { tail -30 "$OUT/${name}_probe.log"; return 1; }
    steps=$(steps_for "$name" "$seconds" 2> >(tee -a "$OUT/${name}_probe.log" >&2)) || return 1
  fi
  local limit; limit=$("$PYTHON" -c "print(round($seconds * 1.15 / 60 + 0.5, 2))")
  echo "phase $name: $steps steps of $BATCH clips (time limit $limit min)"
  "$PYTHON" -m genie_gym.cli train --phase "$name" "${common[@]}" --out "$RUN" --steps "$steps" --lr "$lr" \
    --time-limit-min "$limit" "$@" > "$OUT/${name}.log" 2>&1 || { tail -30 "$OUT/${name}.log"; return 1; }
  echo "phase $name: $steps steps of $BATCH clips ($(tail -1 "$OUT/${name}_probe.log"))" >> "$OUT/${name}.log"
  tail -c 400 "$OUT/${name}.log" | tr '\r' '\n' | tail -3
  tail -1 "$RUN/$name/metrics.jsonl"
}

# slim PHASE...: their weights only (no optimiser state; the frozen LAM is the shipped file's), small enough to come
# back
slim() {
  "$PYTHON" - "$RUN" "$OUT" "$@" <<'EOF'
import shutil, sys
from pathlib import Path
from genie_gym.training.checkpoint import checkpoint_bytes, load_checkpoint
run, out = Path(sys.argv[1]), Path(sys.argv[2])
for phase in sys.argv[3:]:
    ckpt = load_checkpoint(run / phase / "last.pt")
    ckpt["model"] = {phase: ckpt["model"][phase]}
    ckpt["optimizer"] = None
    for key in ("format_version", "kind"):
        ckpt.pop(key)
    (out / f"{phase}_weights.pt").write_bytes(checkpoint_bytes(ckpt))
    shutil.copyfile(run / phase / "metrics.jsonl", out / f"{phase}_metrics.jsonl")
    print(phase, "step", ckpt["step"], f"{(out / f'{phase}_weights.pt').stat().st_size / 2**20:.1f} MiB")
EOF
}

t0=$(date +%s)
# each phase's weights go to $OUT as soon as it ends: a session cut short keeps what finished
phase tokenizer "$TOK_S" "$TOK_LR" "$TOK_STEPS" --init-from "$MODEL" && slim tokenizer || exit 1
echo "tokenizer done after $(( $(date +%s) - t0 )) s"
status=0
dyn_set=()
[ -n "$DYN_SET" ] && read -r -a dyn_set <<< "--set $DYN_SET"
phase dynamics "$DYN_S" "$DYN_LR" "$DYN_STEPS" --tokenizer-ckpt "$RUN/tokenizer/last.pt" --init-from "$MODEL" \
  --freeze-lam ${dyn_set[@]+"${dyn_set[@]}"} && slim dynamics || status=1
echo "dynamics done after $(( $(date +%s) - t0 )) s"
for f in "$OUT"/*.log; do tr '\r' '\n' < "$f" | grep -v -E "it/s|s/it" | tail -c 100000 > "$f.tmp"; mv "$f.tmp" "$f"; done
cat "$OUT"/*_probe.log >> "$OUT/tokenizer.log"; rm -f "$OUT"/*_probe.log

if [ "$SPEED" = 1 ]; then
  timeout 100 "$PYTHON" benchmarks/env_speed.py --device "$DEVICE" --no-quality --memory-steps 0 \
    --prompt genie_gym/assets/sketch.png --steps 2 25 --precisions float32 bfloat16 --compiled False \
    --batch-sizes 1 64 256 1024 --seconds 3 --max-seconds 30 --out "$OUT/env_speed_cuda.json" 2>&1 | tail -20
fi
echo "all done after $(( $(date +%s) - t0 )) s"
exit $status
