"""The machine: CPU and GPU capability, instruction-set capping (--cpu-isa), backend flags, matmul rates."""
import os
import platform
import subprocess
import sys
import time

import torch

import clustering
from bench import ENTRY
from bench.measure import log, rate, sync, timed
from deepemocluster.compute import (configure_backends, cpu_capability, cpu_flags, cpu_has_native_bf16,
                                    cuda_has_native_bf16)


# --- CPU instruction-set emulation ------------------------------------------------------
# Every library that picks its vector code at run time, capped: oneDNN (convolutions),
# ATen (element-wise kernels), MKL (torch's fp32 matmul and Linear), OpenBLAS (numpy's and
# faiss's), numpy's own dispatch, and faiss (FAISS_OPT_LEVEL picks the library of builds
# that ship several, FAISS_SIMD_LEVEL the level of a dynamic-dispatch build). Read when
# each library loads, so they are set in a fresh process: `--cpu-isa` re-runs bench.py.
ISA_EMULATION = {
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2", "OPENBLAS_CORETYPE": "Haswell",
             "FAISS_OPT_LEVEL": "AVX2", "FAISS_SIMD_LEVEL": "AVX2"},
    "avx512": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "ATEN_CPU_CAPABILITY": "avx512",
               "MKL_ENABLE_INSTRUCTIONS": "AVX512", "OPENBLAS_CORETYPE": "SkylakeX",
               "FAISS_OPT_LEVEL": "AVX512", "FAISS_SIMD_LEVEL": "AVX512"},
}
ISA_CPU_FLAG = {"avx2": "avx2", "avx512": "avx512f"}
CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS",
                 "OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES", "FAISS_OPT_LEVEL", "FAISS_SIMD_LEVEL")
EMULATION_MARK = "BENCH_EMULATED_CPU_ISA"   # set in the re-run child: the --cpu-isa choice

# Torch's own backend flags, as the original design ran under them (read before anything
# here changes them): on CUDA the baseline runs with these, the fast path with main.py's.
TORCH_DEFAULT_BACKENDS = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
                          torch.backends.cuda.matmul.allow_tf32)


def use_all_cores():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores)
    try:
        import faiss
        faiss.omp_set_num_threads(cores)
    except (ImportError, AttributeError):
        pass
    return cores


# --- backend flags (CUDA) -----------------------------------------------------------------
def fast_backends(settings):
    """main.py's settings: cuDNN autotuning, no TF32."""
    configure_backends(settings.device)


def original_backends(device):
    """Torch's defaults, under which the original design ran (on CUDA: no autotuning and,
    on Ampere and later, TF32 convolutions, as torch allows them by default)."""
    if device.type == "cuda":
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
         torch.backends.cuda.matmul.allow_tf32) = TORCH_DEFAULT_BACKENDS


def gpu_has_tf32(device):
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def baseline_precision(device):
    """The baseline's precision: fp32, or 'tf32' on a GPU where torch's default flags let
    cuDNN run fp32 convolutions in TF32 (the original design ran so there)."""
    return "tf32" if gpu_has_tf32(device) and TORCH_DEFAULT_BACKENDS[1] else "fp32"


def fast_precision(settings):
    """The fast path's precision: bf16 (convolutions; the rest strict fp32, configure_backends
    keeping TF32 off), else strict fp32."""
    return "bf16" if settings.bf16 else "fp32"


# --- the machine ------------------------------------------------------------------------
def numpy_avx512_targets():
    """numpy's run-time dispatch targets above AVX2 (names differ between numpy versions)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_dispatch__
    return [t for t in __cpu_dispatch__ if "AVX512" in t or t == "X86_V4"]


def isa_environment(choice):
    """The environment variables that cap every library at `choice` ('avx2', 'avx512')."""
    env = dict(ISA_EMULATION[choice])
    if choice == "avx2":
        targets = numpy_avx512_targets()
        if targets:
            env["NPY_DISABLE_CPU_FEATURES"] = " ".join(targets)
    return env


def rerun_with_isa(choice, argv):
    """Run bench.py again in a child process with the libraries capped at `choice`."""
    flag = ISA_CPU_FLAG[choice]
    if flag not in cpu_flags():
        raise SystemExit(f"error: --cpu-isa {choice}: this CPU lacks {flag}; an instruction set "
                         "can only be capped downwards")
    env = dict(os.environ, **isa_environment(choice), **{EMULATION_MARK: choice})
    log(f"re-running with {' '.join(f'{k}={v}' for k, v in isa_environment(choice).items())}")
    return subprocess.run([sys.executable, ENTRY] + list(argv), env=env).returncode


def native_cpu_capability():
    """cpu_capability() without the caps of the environment: what this CPU has."""
    saved = {k: os.environ.pop(k) for k in CAP_VARIABLES if k in os.environ}
    try:
        return cpu_capability()
    finally:
        os.environ.update(saved)


ONEDNN_PROBE = ("import torch\n"
                "c = torch.nn.Conv2d(32, 32, 3, padding=1)\n"
                "with torch.no_grad():\n"
                "    c(torch.randn(2, 32, 62, 128))\n")


def onednn_isa():
    """The instruction set oneDNN reports it runs (ONEDNN_VERBOSE in a child process with this
    process's environment), e.g. 'Intel AVX2'; None where it cannot be told."""
    try:
        proc = subprocess.run([sys.executable, "-c", ONEDNN_PROBE], capture_output=True, text=True,
                              timeout=120, env=dict(os.environ, ONEDNN_VERBOSE="1"))
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (proc.stdout + proc.stderr).splitlines():
        if ",info,cpu,isa:" in line:
            return line.split("isa:", 1)[1].strip()
    return None


def machine_info(device, probe=True):
    """CPU model and capability (native, and as capped), cores, torch, bf16, GPU."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gib = None
    info = {"cpu": model, "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "memory_gib": mem_gib, "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device),
            "cpu_capability": cpu_capability(), "cpu_capability_native": native_cpu_capability(),
            "cpu_isa_emulation": os.environ.get(EMULATION_MARK),
            "cpu_isa_environment": {k: os.environ[k] for k in CAP_VARIABLES if k in os.environ},
            "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_isa": onednn_isa() if probe else None,
            "cpu_native_bf16": cpu_has_native_bf16()}
    try:
        import faiss
        try:
            simd = faiss.SIMDConfig.get_level_name()
        except AttributeError:   # faiss before dynamic dispatch: the library loaded says it
            simd = faiss.get_compile_options().strip() or "generic"
        info["faiss"] = f"{faiss.__version__} ({simd})"
        info["faiss_gpu"] = clustering.faiss_has_gpu()
    except (ImportError, AttributeError):
        info["faiss"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_capability"] = "%d.%d" % torch.cuda.get_device_capability(device)
        info["gpu_memory_gib"] = props.total_memory / 2**30
        info["gpu_bf16"] = cuda_has_native_bf16(device)
        info["gpu_tf32"] = gpu_has_tf32(device)
    return info


# --- 7: matrix-multiply rates ----------------------------------------------------------------
def bench_matmul(n, dtype, device, repeats):
    """torch.matmul of two n×n matrices: GFLOP/s (2·n³ per product). fp32 is strict fp32
    (TF32 off for the measurement on a GPU)."""
    saved = torch.backends.cuda.matmul.allow_tf32
    if device.type == "cuda" and dtype == torch.float32:
        torch.backends.cuda.matmul.allow_tf32 = False
    try:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        torch.matmul(a, b)
        sync(device)
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        one = max(time.perf_counter() - t0, 1e-6)
        iters = max(1, int(0.2 / one))          # about 0.2 s per timed repeat

        def run():
            for _ in range(iters):
                torch.matmul(a, b)
        times = timed(run, repeats, device)
    finally:
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = saved
    return rate(2.0 * n ** 3 * iters / 1e9, times) + (times,)
