#!/usr/bin/env bash
# The GPU checks, as one prepared run for a machine with a CUDA GPU and its own PyTorch.
#
#   scripts/gpu_check.sh prepare        here, in the repo: copy the pure-Python packages such a
#                                       machine may lack (Hydra, OmegaConf, ANTLR's runtime,
#                                       chatterbot-corpus) from .venv into .gpu_site/
#   scripts/gpu_check.sh run OUT_DIR    there: the GPU benchmark (`python -m benchmarks
#                                       --only gpu`), then five short training runs through
#                                       train.py: gru_attn bf16-mixed, the same under DDP on one
#                                       GPU (trainer=ddp), gru_attn fp32 on TF32, GPT-2 from
#                                       scratch, and GPT-2 under debug=profile_torch (its table at
#                                       the end of the log); logs into OUT_DIR (8 files)
#
# Each step has a time limit of its own and a failed step does not stop the next. ACCEL=cpu runs
# the same commands on the CPU (to check them without a GPU).
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

prepare() {
    local site
    site=$(.venv/bin/python -c "import site; print(site.getsitepackages()[0])") || exit 1
    rm -rf .gpu_site && mkdir -p .gpu_site
    for name in hydra omegaconf antlr4 chatterbot_corpus \
        hydra_core-*.dist-info omegaconf-*.dist-info antlr4_python3_runtime-*.dist-info \
        chatterbot_corpus-*.dist-info; do
        cp -r "$site"/$name .gpu_site/ || exit 1
    done
    find .gpu_site -name __pycache__ -prune -exec rm -rf {} +
    grep -qx '/.gpu_site/' .git/info/exclude 2>/dev/null || echo '/.gpu_site/' >>.git/info/exclude
    du -sh .gpu_site
}

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to OUT/NAME.log, say how it ended
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "== $name: rc $rc after $((SECONDS - start)) s (limit $limit s)"
    tail -n 25 "$out/$name.log"
}

newest() {  # the newest file called NAME under outputs/train
    find outputs/train -name "$1" -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -1 | cut -d' ' -f2
}

run() {
    out=$1
    mkdir -p "$out"
    export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline
    export PYTHONPATH="$here/src:$here:$here/.gpu_site${PYTHONPATH:+:$PYTHONPATH}"
    local accel=${ACCEL:-gpu} py=${PY:-python3}
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    "$py" -c "import torch, pytorch_lightning as lightning, transformers; print('torch', torch.__version__, 'cuda',
torch.version.cuda, 'available', torch.cuda.is_available(), '| lightning', lightning.__version__,
'| transformers', transformers.__version__)"
    step bench "${BENCH_LIMIT:-300}" "$py" -m benchmarks --only gpu --out "$out/bench"
    local quick=(experiment=quickstart logger=csv "trainer.accelerator=$accel" trainer.devices=1
        sample_replies=3)
    step train_gru_bf16 "${TRAIN_LIMIT:-75}" "$py" train.py "${quick[@]}" trainer=gpu \
        trainer.max_epochs=3
    local backend=()  # NCCL on a GPU (the config's null); DDP_BACKEND=gloo with ACCEL=cpu
    [ -n "${DDP_BACKEND:-}" ] && backend=("trainer.strategy.process_group_backend=$DDP_BACKEND")
    step train_gru_ddp "${TRAIN_LIMIT:-75}" "$py" train.py "${quick[@]}" trainer=ddp \
        trainer.max_epochs=2 "${backend[@]}"
    step train_gru_tf32 "${TRAIN_LIMIT:-75}" "$py" train.py "${quick[@]}" trainer=gpu \
        trainer.precision=32 float32_matmul_precision=high trainer.max_epochs=3
    step train_gpt2 "${TRAIN_LIMIT:-75}" "$py" train.py model=gpt2_scratch data=chatterbot \
        logger=csv trainer=gpu "trainer.accelerator=$accel" trainer.max_epochs=1 \
        +trainer.limit_train_batches=50 sample_replies=3
    # where GPT-2's training step goes (the profile's table at the end of the log)
    step profile_gpt2 "${TRAIN_LIMIT:-75}" "$py" train.py model=gpt2_scratch data=chatterbot \
        logger=csv trainer=gpu "trainer.accelerator=$accel" debug=profile_torch
    local profile
    profile=$(newest fit-profile.txt)
    [ -n "$profile" ] && cat "$profile" >>"$out/profile_gpt2.log"
    # what GPU runs used to print: Lightning's TF32 hint, DDP's stream warning, CPU GRU builds
    grep -c -e "set_float32_matmul_precision" -e "AccumulateGrad node's stream" \
        -e "building the fused GRU" "$out"/train_*.log
    ls -la "$out" "$out"/bench/* 2>&1
}

case ${1:-} in
prepare) prepare ;;
run) run "${2:?run needs an output folder}" ;;
*)
    echo "usage: $0 prepare | run OUT_DIR" >&2
    exit 2
    ;;
esac
