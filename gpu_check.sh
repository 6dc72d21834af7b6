#!/usr/bin/env bash
# GPU check, in one command on a machine with an NVIDIA GPU:
#
#     bash gpu_check.sh [--install-faiss] [--dry-run] [WORK_DIR]
#
# It sets up .venv as demo.sh does (setup_env.sh), then:
#   - where the machine shows an NVIDIA GPU (nvidia-smi -L, /dev/nvidia*) that torch cannot use,
#     it fails with one line saying why (a CPU build of torch; a driver older than torch's
#     CUDA, with both versions; else CUDA_VISIBLE_DEVICES or device access); with no GPU at all
#     it prints "SKIPPED - no CUDA device: nothing checked" and exits 0;
#   - it says which faiss is installed and names the faiss GPU build that matches
#     torch.version.cuda (--install-faiss installs it in place of faiss-cpu);
#   - it runs tests/test_gpu.py and prints a summary with the GPU's name:
#   (a) CUDA predictions of released-layout checkpoints (random models of the four temporal
#       types, and the shipped demo models) equal the CPU fp32 ones within 1e-4 under
#       --precision fp32 and the default, with TF32 off (configure_backends);
#   (b) the training's k-means (main.cluster_chunks beside a CUDA network) runs through faiss's
#       GPU index on that GPU and gives the CPU partition on well-separated data (skipped, with
#       the faiss build to install, where faiss has no GPU support);
#   (c) a bf16 training on the demo corpus (CUDA) ends with finite losses and a Test1 CCC
#       within 0.05 of the CPU fp32 run at the same seed; 2 epochs (GPU_CHECK_EPOCHS=10 for a
#       comparison that means more: after 2 epochs both models have learned little);
#   (d) bench.py --device cuda --quick writes its table (WORK_DIR/bench_cuda.txt and .json);
#   (e) torchrun --nproc_per_node <GPUs> main.py trains 2 demo epochs with NCCL (one process per
#       GPU): finite losses, validation losses within 0.05 of one process's (both printed),
#       seconds per epoch beside one process's; with one GPU it says that NCCL moved no data;
#   (f) on 2 or more GPUs: N processes over NCCL take the training steps of one process within
#       1e-6 in float64, for the four temporal types and -unlabel, with batches that leave the
#       last process an empty share.
# Everything goes to WORK_DIR (default: a new folder under $TMPDIR or /tmp), never into the
# repository's trained_models/ or NormTerm/ (the shipped demo models are only read).
# The exit status is pytest's: 0 when every check passed (or was skipped, with the reason in
# the summary), non-zero when one failed; 1 for a GPU that torch cannot use.
# --dry-run (or GPU_CHECK_DRY_RUN=1) runs every check with the CPU standing in for the GPU
# (gloo and 2 processes for (e) and (f)): it tests the checks' own logic and proves nothing
# about a GPU. GPU_CHECK_DEMO_SIZE scales the demo corpus of (c) and (e) (default 1).
set -euo pipefail
cd "$(dirname "$0")"
WORK="" INSTALL_FAISS="" DRY_RUN="${GPU_CHECK_DRY_RUN:-}"
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        --install-faiss) INSTALL_FAISS=1 ;;
        -*) echo "gpu_check: unknown option $arg (usage: bash gpu_check.sh [--install-faiss] [--dry-run] [WORK_DIR])" >&2
            exit 2 ;;
        *) WORK="$arg" ;;
    esac
done
source setup_env.sh
PY=.venv/bin/python
HELPER=tests/support/gpu_check.py

status=0
GPU=$("$PY" "$HELPER" probe ${DRY_RUN:+--dry-run}) || status=$?
echo "gpu_check: $GPU"
case "$status" in
    0) ;;
    3) exit 0 ;;        # no GPU at all: nothing to check
    *) exit 1 ;;
esac
echo "gpu_check: $("$PY" "$HELPER" faiss ${DRY_RUN:+--dry-run} ${INSTALL_FAISS:+--install})"

WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
echo "gpu_check: work folder $WORK"

rc=0
GPU_CHECK_DRY_RUN="$DRY_RUN" GPU_CHECK_DIR="$WORK" "$PY" -m pytest -v -rs -p no:cacheprovider \
    --basetemp "$WORK/pytest" --junitxml "$WORK/junit.xml" tests/test_gpu.py 2>&1 | tee "$WORK/pytest.log" || rc=$?
"$PY" "$HELPER" summary "$WORK" "$GPU" "$rc"
exit "$rc"
