#!/usr/bin/env bash
# The GPU check of the Stable Diffusion path: one command, at most 8 minutes on one H100/H200.
#
#   bench/gpu_check.sh                              # on the GPU machine (offline; needs .whl/ beside the code)
#   SJC_GPU_CHECK_DEVICE=cpu bench/gpu_check.sh     # dry run of the same flow on the CPU with tiny shapes
#
# Stages (each with its own time limit; a failing stage is reported and the next one still runs):
#   1. env:      the machine's Python (CUDA torch, transformers, ...) plus what it lacks (diffusers, trimesh,
#                PyAV, ...) installed offline from .whl/ into $WORK/site, which goes on PYTHONPATH with this
#                checkout (the project itself is not installed: its pins would replace the machine's torch)
#   2. tests:    pytest -m cuda (tests/engine/test_sd_cuda.py: fp16 on the GPU against float32 on the CPU, SJC
#                steps, generate)
#   3. sd15:     SD 1.5-shaped random UNet at fp16 in the SJC loop: steps/s, minutes per 10k steps, peak VRAM,
#                share of a step outside the UNet; the UNet alone, plain and channels_last
#   4. generate: a 200-step `sjc generate` on CUDA with a tiny random SD pipeline (latent 64, grid 100)
#   4b. compile:  the UNet alone under torch.compile (CUDA graphs), with what is left of the time budget
# Figures go to $RESULTS/gpu_check.md (a section to append to bench/RESULTS.md) with the JSON and logs beside it.
#
# Settings (environment): SJC_GPU_CHECK_DEVICE (cuda | cpu, default cuda), SJC_GPU_CHECK_OUT (results folder,
# default $OUT when set, else out/gpu_check), SJC_GPU_CHECK_WORK (scratch: installed wheels, the tiny model and
# its run; default out/gpu_check_work), SJC_WHEELS (default .whl), PYTHON (default python3),
# SJC_GPU_CHECK_COMPILE (1: also time torch.compile, default 1 on cuda), SJC_GPU_CHECK_BUDGET_S (460). Prepare the wheels where there is a
# network with bench/gpu/fetch_wheels.sh, and bring .whl/ along (it is ignored by git).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${SJC_GPU_CHECK_DEVICE:-cuda}
RESULTS=${SJC_GPU_CHECK_OUT:-${OUT:-$ROOT/out/gpu_check}}
WHEELS=${SJC_WHEELS:-$ROOT/.whl}
PY=${PYTHON:-python3}
WORK=${SJC_GPU_CHECK_WORK:-$ROOT/out/gpu_check_work}
SITE=$WORK/site
START=$(date +%s)
BUDGET_S=${SJC_GPU_CHECK_BUDGET_S:-460}  # all stages together; the 8-minute promise with room for start-up
mkdir -p "$RESULTS"
: >"$RESULTS/log.txt"

log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$RESULTS/log.txt" >&2; }
stage() {  # stage NAME LIMIT_S COMMAND...: run within LIMIT_S and the overall budget, output to NAME.log
  local name=$1 limit=$2 rc left
  shift 2
  left=$((BUDGET_S - ($(date +%s) - START)))
  ((left < limit)) && limit=$left
  if ((limit < 10)); then log "stage $name: skipped, the ${BUDGET_S} s budget is spent"; return 124; fi
  log "stage $name (limit ${limit}s)"
  timeout -k 10 "$limit" "$@" >"$RESULTS/$name.log" 2>&1
  rc=$?
  log "stage $name: exit $rc after $(($(date +%s) - START)) s in all"
  if ((rc != 0)); then tail -n 30 "$RESULTS/$name.log" | tee -a "$RESULTS/log.txt" >&2; fi
  return $rc
}

if [[ $MODE == cpu ]]; then
  TINY=--tiny; SD15_STEPS=5; ITERS=3; GEN_STEPS=2; GEN_SIZE=16; GEN_GRID=16; FRAMES=2; COMPILE=${SJC_GPU_CHECK_COMPILE:-0}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
elif [[ $MODE == cuda ]]; then
  TINY=; SD15_STEPS=300; ITERS=50; GEN_STEPS=200; GEN_SIZE=64; GEN_GRID=100; FRAMES=24; COMPILE=${SJC_GPU_CHECK_COMPILE:-1}
else
  echo "SJC_GPU_CHECK_DEVICE must be cuda or cpu, not '$MODE'" >&2
  exit 2
fi

# 1. environment
log "python: $(command -v "$PY") ($("$PY" --version 2>&1)); results in $RESULTS"
stage env 90 "$PY" bench/gpu/install_wheels.py --wheels "$WHEELS" --target "$SITE" || { log "error: cannot prepare the environment"; exit 2; }
export PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}
export PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
"$PY" - "$RESULTS/env.json" "$MODE" <<'PYEOF' || { log "error: the engine does not import"; exit 2; }
import datetime, json, platform, sys
import torch, diffusers, transformers, sjc_engine.denoisers.loader  # noqa: F401  (the engine must import)
mode = sys.argv[2]
if mode == "cuda" and not torch.cuda.is_available():
    sys.exit("SJC_GPU_CHECK_DEVICE=cuda but torch sees no CUDA GPU")
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU (CPU dry run)"
env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "mode": mode, "gpu": gpu,
       "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
       "diffusers": diffusers.__version__, "transformers": transformers.__version__}
json.dump(env, open(sys.argv[1], "w"), indent=2)
print(env)
PYEOF

# 2. CUDA-marked tests (all skipped in the CPU dry run: that checks they collect)
stage tests 120 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/engine/test_sd_cuda.py
"$PY" - "$RESULTS/tests.log" "$RESULTS/tests.json" "$?" <<'PYEOF'
import json, sys
lines = [l for l in open(sys.argv[1]).read().splitlines() if l.strip()]
summary = next((l.strip("= ") for l in reversed(lines) if " in " in l and ("passed" in l or "failed" in l or "skipped" in l or "error" in l)), "no summary")
json.dump({"rc": int(sys.argv[3]), "summary": summary}, open(sys.argv[2], "w"))
PYEOF

# 3. SD 1.5-shaped UNet in the SJC loop
stage sd15 150 "$PY" bench/gpu/bench_sd15.py --device "$MODE" $TINY --steps "$SD15_STEPS" --iters "$ITERS" \
  --out "$RESULTS/sd15.json"

# 4. sjc generate end to end
stage generate 120 "$PY" bench/gpu/run_generate.py --device "$MODE" --steps "$GEN_STEPS" --sample-size "$GEN_SIZE" \
  --grid "$GEN_GRID" --video-frames "$FRAMES" --work "$WORK/generate" --out "$RESULTS/generate.json"
rm -rf "$RESULTS/generate_previews"
cp -r "$WORK/generate/run/previews" "$RESULTS/generate_previews" 2>/dev/null

# 4b. last, with what is left of the budget: the UNet under torch.compile (CUDA graphs), added to sd15.json
if [[ $COMPILE == 1 && -f $RESULTS/sd15.json ]]; then
  stage compile 200 "$PY" bench/gpu/bench_sd15.py --device "$MODE" $TINY --iters "$ITERS" --compile-only \
    --out "$RESULTS/sd15.json"
fi

# 5. the report
"$PY" - "$RESULTS/env.json" "$(($(date +%s) - START))" <<'PYEOF'
import json, sys
env = json.load(open(sys.argv[1])); env["total_s"] = float(sys.argv[2]); json.dump(env, open(sys.argv[1], "w"), indent=2)
PYEOF
"$PY" bench/gpu/report.py "$RESULTS" >"$RESULTS/gpu_check.md"
cat "$RESULTS/gpu_check.md"
log "done in $(($(date +%s) - START)) s; append $RESULTS/gpu_check.md to bench/RESULTS.md"
for f in tests.json sd15.json generate.json; do [[ -f $RESULTS/$f ]] || exit 1; done
"$PY" -c "import json,sys; t=json.load(open(sys.argv[1])); g=json.load(open(sys.argv[2])); sys.exit(1 if t['rc'] or g['rc'] else 0)" \
  "$RESULTS/tests.json" "$RESULTS/generate.json"
