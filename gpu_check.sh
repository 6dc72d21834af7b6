#!/usr/bin/env bash
# GPU check, in one command on a machine with an NVIDIA GPU:
#
#     bash gpu_check.sh [WORK_DIR]
#
# It runs tests/test_gpu.py and prints a summary with the GPU's name:
#   (a) CUDA predictions of released-layout checkpoints (random models of the four temporal
#       types, and the shipped demo models) equal the CPU fp32 ones within 1e-4 under
#       --precision fp32 and the default, with TF32 off (configure_backends);
#   (b) faiss GPU k-means gives the CPU partition on well-separated data (skipped, and said,
#       where faiss has no GPU support);
#   (c) a bf16 training on the demo corpus (CUDA) ends with finite losses and a Test1 CCC
#       within 0.05 of the CPU fp32 run at the same seed; 2 epochs (GPU_CHECK_EPOCHS=10 for a
#       comparison that means more: after 2 epochs both models have learned little);
#   (d) bench.py --device cuda --quick writes its table (WORK_DIR/bench_cuda.txt and .json);
#   (e) torchrun --nproc_per_node <GPUs> main.py trains 2 demo epochs with NCCL (one process per
#       GPU) to finite losses; the summary gives its seconds per epoch beside one process's.
# Everything goes to WORK_DIR (default: a new folder under $TMPDIR or /tmp), never into the
# repository's trained_models/ or NormTerm/ (the shipped demo models are only read).
#
# Without a CUDA device it prints a "SKIPPED - no CUDA device: nothing checked" line and exits
# 0: there is nothing to check there, and the test suite stays green on CPU-only machines.
# With one, the exit status is pytest's: 0 when every check passed (or was skipped, with the
# reason in the summary), non-zero when one failed.
# GPU_CHECK_DRY_RUN=1 runs the checks with the CPU standing in for the GPU: it tests the
# checks' own plumbing and proves nothing about a GPU.
set -euo pipefail
cd "$(dirname "$0")"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi

if [ -z "${GPU_CHECK_DRY_RUN:-}" ] && \
   ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    what=$("$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}")' \
           2>/dev/null || echo "torch not importable")
    echo "gpu_check: SKIPPED - no CUDA device: nothing checked ($what)"
    exit 0
fi

WORK="${1:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
if [ -n "${GPU_CHECK_DRY_RUN:-}" ]; then
    GPU="DRY RUN on the CPU (no GPU checked)"
else
    GPU=$("$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"{p.name}, compute {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")')
fi
echo "gpu_check: $GPU"
echo "gpu_check: work folder $WORK"

rc=0
GPU_CHECK_DIR="$WORK" "$PY" -m pytest -v -rs -p no:cacheprovider --basetemp "$WORK/pytest" \
    --junitxml "$WORK/junit.xml" tests/test_gpu.py 2>&1 | tee "$WORK/pytest.log" || rc=$?

"$PY" - "$WORK" "$GPU" "$rc" <<'EOF'
import json, os, sys
import xml.etree.ElementTree as ET

work, gpu, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
checks = (("test_configure_backends", "(a) TF32 off under fp32"),
          ("test_cuda_predictions", "(a) CUDA predictions = CPU fp32 within 1e-4"),
          ("test_faiss_gpu", "(b) faiss GPU k-means = CPU partition"),
          ("test_bf16_training", "(c) bf16 training on the GPU vs CPU fp32"),
          ("test_bench_on_cuda", "(d) bench.py --device cuda table"),
          ("test_torchrun_on_every_gpu", "(e) torchrun on every GPU (NCCL)"))
print(f"\ngpu_check summary on {gpu}")
path = os.path.join(work, "junit.xml")
if not os.path.isfile(path):
    print(f"  no test report (pytest exit status {rc}); see {work}/pytest.log")
    sys.exit(0)
for case in ET.parse(path).getroot().iter("testcase"):
    name = case.get("name")
    label = next((l for key, l in checks if name.startswith(key)), name)
    param = name[name.index("["):] if "[" in name else ""
    status, why = "PASSED", ""
    for tag in ("failure", "error", "skipped"):
        node = case.find(tag)
        if node is not None:
            status = {"failure": "FAILED", "error": "ERROR", "skipped": "SKIPPED"}[tag]
            why = (node.get("message") or "").splitlines()[0][:160] if node.get("message") else ""
    print(f"  {status:7s} {label} {param}" + (f" - {why}" if why else ""))
def result(name):
    """A check's figures, as its test wrote them to the work folder (None if it did not)."""
    path = os.path.join(work, name)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def seconds(values):
    return ", ".join(f"{s:.0f}" for s in values)


t = result("c_training.json")
if t:
    print(f"  (c) Test1 CCC {t['emotion']} after {t['epochs']} epochs: {t['gpu_precision']} on the GPU {t['test1_ccc_cuda']:.4f}, "
          f"CPU fp32 {t['test1_ccc_cpu_fp32']:.4f}; seconds per epoch GPU {seconds(t['seconds_cuda'])}, "
          f"CPU {seconds(t['seconds_cpu'])}")
t = result("e_torchrun.json")
if t:
    print(f"  (e) seconds per epoch over {t['epochs']} demo epochs: torchrun with {t['gpus']} process(es) "
          f"({t['backend']}) {seconds(t['seconds_torchrun'])}; one process {seconds(t['seconds_one_process'])}")
table = os.path.join(work, "bench_cuda.txt")
if os.path.isfile(table):
    print(f"  bench table: {table}")
print(f"  overall: {'PASSED' if rc == 0 else f'FAILED (pytest exit status {rc})'}; log: {work}/pytest.log")
EOF
exit "$rc"
