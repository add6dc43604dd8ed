#!/usr/bin/env bash
# PPO speed + memory benchmarks on a GPU machine, side by side with the TRL 1.12 anchor. See benchmarks/README.md.
#
#   bash benchmarks/gpu.sh prepare   # HERE (network): wheels + anchor script into .bench/ (~58 MiB)
#   bash benchmarks/gpu.sh prepare-zero  # HERE: our wheels without bitsandbytes + DeepSpeed into .bench-zero/
#   bash benchmarks/gpu.sh speed     # device: anchor 1b lora | ours 1b | ours 1b merged + static cache (~5 min)
#   bash benchmarks/gpu.sh speed-variants  # device: ours 1b merged generation | ours 1b static cache     (~4 min)
#   bash benchmarks/gpu.sh 7b        # device: ours 7b, 8-bit base, 24 GiB cap                          (~6 min)
#   bash benchmarks/gpu.sh memory    # device: memory.py 1b 7b (SFT, RM, PPO; 8-bit base, 24 GiB cap)    (~6 min)
#   bash benchmarks/gpu.sh memory13  # device: memory.py 13b                                              (~6 min)
#   bash benchmarks/gpu.sh reward    # device: reward.py, ranked vs TRL pairwise RM, K=4 and 8 (tiny SFT)  (~5 min)
#   BENCH_DIR=.bench-zero bash benchmarks/gpu.sh zero   # device, carry .bench-zero: zero.py, each stage plain
#                                    # vs ZeRO-2 vs ZeRO-3 (1 process); ZERO_ARGS="--cpu --steps 2" on a CPU
#   bash benchmarks/gpu.sh gpu-tests # device: pytest -m gpu (tests/test_gpu.py)                          (~2 min)
#   bash benchmarks/gpu.sh smoke     # anywhere: the same plumbing on tiny models (CPU is fine)
#   bash benchmarks/gpu.sh all       # device: speed, 7b, memory, memory13 in one go (> 10 min: too long for one call)
#
# Each device part ends by printing one table of what it ran; every JSON line also goes to $OUT/results.jsonl
# (and /tmp/bench_results.jsonl, which lives as long as the machine) and each log to $OUT/<name>.log.
# Environment: OURS_TRANSFORMERS=machine runs our code on the machine's transformers instead of the carried one;
# UPDATES (default 5) = PPO updates of the 1b runs; RLHF_BENCH_DIR = where the random-weight models are written.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
BENCH=$(realpath -m "${BENCH_DIR:-$REPO/.bench}")
WHEELS=$BENCH/wheels
PART=${1:-speed}

# ------------------------------------------------------------------------------------------------ prepare (here)
if [[ $PART == prepare ]]; then
  PIP=${PIP:-python3 -m pip}
  FLAGS="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
         --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
         --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d $WHEELS"
  mkdir -p "$WHEELS" "$BENCH/anchor"
  # one spec per call: pip refuses two versions of trl in one resolution
  for spec in trl==1.12.0 trl==1.16.0 transformers==5.23.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 \
              multiprocess==0.70.19 evaluate==0.4.6 bitsandbytes==0.50.2 pytest==9.2.0 pluggy iniconfig pygments; do
    $PIP download -q $FLAGS "$spec" || { echo "pip download $spec failed"; exit 1; }
  done
  ANCHORS=${ANCHORS:-$REPO/../shared/anchors}
  cp "$ANCHORS"/trl112_ppo.py "$ANCHORS"/README.md "$BENCH/anchor/" || { echo "no anchor at $ANCHORS"; exit 1; }
  ls -la "$WHEELS"
  du -sh "$BENCH"
  echo "Now keep .bench out of git (echo /.bench/ >> .git/info/exclude) and pass carry: [\".bench\"] to the device."
  exit 0
fi

if [[ $PART == prepare-zero ]]; then  # DeepSpeed is an sdist: build its (pure Python, no ops) wheel here
  BENCH=$REPO/.bench-zero WHEELS=$REPO/.bench-zero/wheels
  PIP=${PIP:-python3 -m pip}
  FLAGS="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
         --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d $WHEELS"
  mkdir -p "$WHEELS"
  for spec in trl==1.16.0 transformers==5.23.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
              evaluate==0.4.6 hjson ninja msgpack py-cpuinfo nvidia-ml-py einops pydantic pydantic-core \
              annotated-types typing-inspection typing-extensions; do
    $PIP download -q $FLAGS "$spec" || { echo "pip download $spec failed"; exit 1; }
  done
  # the build imports torch: use an environment that has it (make install's venv)
  DS_BUILD_OPS=0 ${DS_PY:-$REPO/.venv/bin/python} -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" \
    deepspeed==0.19.8 || { echo "building the deepspeed wheel failed"; exit 1; }
  ls -la "$WHEELS"; du -sh "$BENCH"
  echo "Keep it out of git (echo /.bench-zero/ >> .git/info/exclude); on the device: carry [\".bench-zero\"]."
  exit 0
fi

# ------------------------------------------------------------------------------------------------ device setup
OUT=${OUT:-/tmp/bench_out}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"  # this call's results only
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export RLHF_BENCH_DIR=${RLHF_BENCH_DIR:-/tmp/rlhf_hf_bench}
PY=${PY:-python3}
SITE_OURS=/tmp/site_ours-$(basename "$BENCH")-${OURS_TRANSFORMERS:-carried}  # one per wheel set (a warm machine keeps /tmp)
SITE_ANCHOR=/tmp/site_anchor
[[ -d $WHEELS ]] || { echo "no $WHEELS: run 'bash benchmarks/gpu.sh prepare' here and carry .bench"; exit 1; }

install() {  # install <target> <wheel-glob>...: once per machine
  local target=$1; shift
  [[ -f $target/.done ]] && return 0
  local files=()
  for pattern in "$@"; do files+=("$WHEELS"/$pattern); done
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$target" "${files[@]}" \
    && touch "$target/.done"
}
COMMON=("datasets-*.whl" "dill-*.whl" "multiprocess-*.whl")
OURS=("${COMMON[@]}" "trl-1.16.0-*.whl" "peft-*.whl" "evaluate-*.whl")
has() { compgen -G "$WHEELS/$1" > /dev/null; }
has "pytest-*.whl" && OURS+=("pytest-*.whl" "pluggy-*.whl" "iniconfig-*.whl" "pygments-*.whl")
has "bitsandbytes-*.whl" && OURS+=("bitsandbytes-*.whl")
has "deepspeed-*.whl" && OURS+=("deepspeed-*.whl" "hjson-*.whl" "ninja-*.whl" "msgpack-*.whl" "py_cpuinfo-*.whl"
  "nvidia_ml_py-*.whl" "einops-*.whl" "pydantic-*.whl" "pydantic_core-*.whl" "annotated_types-*.whl"
  "typing_inspection-*.whl" "typing_extensions-*.whl")
[[ ${OURS_TRANSFORMERS:-carried} == machine ]] || OURS+=("transformers-*.whl")
install $SITE_OURS "${OURS[@]}" || { echo "installing our wheels failed"; exit 1; }
if has "trl-1.12.0-*.whl"; then
  install $SITE_ANCHOR "${COMMON[@]}" "trl-1.12.0-*.whl" || { echo "installing the anchor's wheels failed"; exit 1; }
fi

ours() {  # ours <log name> <timeout s> <python args...>: our code on trl 1.16 (+ transformers 5.23)
  local name=$1 limit=$2; shift 2
  echo "== $name: $*"
  PYTHONPATH=$SITE_OURS:$REPO timeout "$limit" $PY "$@" 2>&1 | tee "$OUT/$name.log" | grep '^{' >> "$RESULTS"
  tail -n 3 "$OUT/$name.log"
}

anchor() {  # anchor <size> <mode>: TRL 1.12's PPOTrainer on the machine's transformers/peft
  local script=$BENCH/anchor/trl112_ppo.py
  echo "== anchor $1 $2"
  PYTHONPATH=$SITE_ANCHOR timeout 400 $PY "$script" "$1" "$2" 2>&1 | tee "$OUT/anchor-$1-$2.log" | grep '^{' >> "$RESULTS"
  tail -n 2 "$OUT/anchor-$1-$2.log"
}

versions() {
  echo "== versions"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  PYTHONPATH=$SITE_OURS $PY -c "
import importlib
def v(name):
    try:
        return getattr(importlib.import_module(name), '__version__', '?')
    except Exception:
        return 'absent'
print('ours:', *(f'{m} {v(m)}' for m in ('torch', 'transformers', 'trl', 'peft', 'datasets', 'bitsandbytes', 'deepspeed', 'pyarrow', 'fsspec')))"
  PYTHONPATH=$SITE_ANCHOR $PY -c "import transformers, trl, peft; \
print('anchor:', 'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__)"
  df -h /tmp | tail -n 1
}

table() {
  echo "== results ($PART)"
  [[ -s $RESULTS ]] || { echo "(no JSON results: see the logs above)"; return 0; }
  PYTHONPATH=$SITE_OURS:$REPO $PY benchmarks/common.py "$RESULTS"
  cat "$RESULTS" >> /tmp/bench_results.jsonl
}

UPDATES=${UPDATES:-5}
part_speed() {  # the anchor, ours by default, ours with the generation settings the anchors' probe points to
  anchor 1b lora
  ours ppo-1b 300 benchmarks/ppo.py --size 1b --updates "$UPDATES" --json
  ours ppo-1b-merged-static 300 benchmarks/ppo.py --size 1b --updates "$UPDATES" --merge_adapter_for_generation \
    --cache_implementation static --json
}
part_speed_variants() {  # each generation setting alone
  ours ppo-1b-merged 300 benchmarks/ppo.py --size 1b --updates "$UPDATES" --merge_adapter_for_generation --json
  ours ppo-1b-static 300 benchmarks/ppo.py --size 1b --updates "$UPDATES" --cache_implementation static --json
}
part_7b() {
  ours ppo-7b-8bit 540 benchmarks/ppo.py --size 7b --load_in_8bit --memory_cap_gib 24 --updates 3 --json
}
part_memory() {
  ours memory-1b-7b 560 benchmarks/memory.py --size 1b 7b --json
}
part_reward() {  # the RM benchmark's GPU column: the tiny SFT model trained here, then both trainers on it
  ours sft-tiny 300 recipes/sft.py --config recipes/configs/sft_tiny.yaml --output_dir "$RLHF_BENCH_DIR/sft-tiny"
  ours reward 560 benchmarks/reward.py --sft "$RLHF_BENCH_DIR/sft-tiny/merged" --device cuda --k 4 8 --lr 2e-3
  grep '^|\|^20' "$OUT/reward.log"
}
part_zero() {  # each stage plain vs ZeRO-2 vs ZeRO-3 on the tiny default (needs the .bench-zero wheels)
  # shellcheck disable=SC2086
  ours zero 560 benchmarks/zero.py ${ZERO_ARGS:-}
  grep '^|\|^20' "$OUT/zero.log"
}
part_gpu_tests() {  # the `gpu`-marked tests (bf16, bitsandbytes CUDA kernels, static-cache decoding)
  echo "== pytest -m gpu"
  PYTHONPATH=$SITE_OURS:$REPO timeout 500 $PY -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu-tests.log" | tail -n 15
}
part_smoke() {  # the plumbing on a CPU, tiny models (PY=... may point at a venv that has every package)
  anchor tiny lora
  ours ppo-tiny 300 benchmarks/ppo.py --size tiny --updates 3 --prompt_len 16 --answer_len 16 --batch 8 --json
  ours memory-tiny 300 benchmarks/memory.py --size tiny --json
}
part_memory13() {
  rm -rf "$RLHF_BENCH_DIR"/1b-* "$RLHF_BENCH_DIR"/7b-*  # 26 GB of 13b bf16 weights need the disk
  ours memory-13b 560 benchmarks/memory.py --size 13b --json
}

versions
case $PART in
  speed) part_speed ;;
  speed-variants) part_speed_variants ;;
  7b) part_7b ;;
  memory) part_memory ;;
  memory13) part_memory13 ;;
  reward) part_reward ;;
  zero) part_zero ;;
  gpu-tests) part_gpu_tests ;;
  smoke) part_smoke ;;
  all) part_speed; part_7b; part_memory; part_memory13 ;;
  *) echo "unknown part $PART (prepare | prepare-zero | speed | speed-variants | 7b | memory | memory13 | reward | zero | gpu-tests | all | smoke)"; exit 2 ;;
esac
table
