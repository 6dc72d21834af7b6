"""Where and how the network runs: the device, the CPU's vector capability, the
precision (fp32 or bf16 autocast), torch.compile, memory reuse and backend flags, and the
Settings of one process (its device and precision, and under torchrun its place in the run)
that the training steps, online testing and prediction share.
"""
import contextlib
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from utils import UserError


@dataclass(frozen=True)
class Settings:
    """How one process runs the network, built once and handed to every step: its device and
    precision (`precision` as asked, `bf16` whether autocast is on), and for training its place in
    a distributed run (torchrun: `rank` of `world_size` processes, collectives over `backend`, long
    waits in `wait_group`; a plain run, and inference, is rank 0 of 1, backend None;
    deepemocluster/distributed.py). Training builds it in main.train(), inference with
    inference_settings()."""

    device: torch.device
    precision: str = "fp32"
    bf16: bool = False
    rank: int = 0
    world_size: int = 1
    backend: str = None
    wait_group: object = field(default=None, repr=False, compare=False)

    @property
    def distributed(self):
        """Launched by torchrun: the steps split each batch and exchange results."""
        return self.backend is not None

    @property
    def is_main(self):
        """The process that writes the run's files and prints its log (rank 0)."""
        return self.rank == 0

    def log(self, *args, **kwargs):
        if self.is_main:
            print(*args, **kwargs)


def single_process(device="auto", precision="auto", training=True):
    """The Settings of a plain run (no torchrun): the device picked, bf16 as the precision asks."""
    device = pick_device(device)
    return Settings(device, precision, use_bf16(precision, device, training))


def inference_settings(device="auto", precision="auto"):
    """The Settings of online testing and prediction: --precision auto stays fp32 (use_bf16)."""
    return single_process(device, precision, training=False)


def pick_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)


# --- the CPU's vector capability -------------------------------------------------
# oneDNN instruction sets below native bf16: ONEDNN_MAX_CPU_ISA set to one of these makes
# bf16 emulated (slow) even on a CPU that has it, as on a CPU without it.
ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                     "AVX512_CORE_VNNI")
ISAS_WITHOUT_AMX = ISAS_WITHOUT_BF16 + ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512")


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_capability():
    """The CPU's vector capability as the convolutions see it: 'AMX', 'AVX-512 BF16',
    'AVX-512', 'AVX2' or the machine name (e.g. 'arm64'), lowered by ONEDNN_MAX_CPU_ISA
    and ATEN_CPU_CAPABILITY when they are set."""
    import platform

    flags = cpu_flags()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    capped_avx2 = isa.startswith(("SSE", "AVX2")) or isa == "AVX" or aten in ("avx2", "default")
    if not flags:
        return platform.machine() or "unknown"
    if "amx_bf16" in flags and isa not in ISAS_WITHOUT_AMX and not capped_avx2:
        return "AMX"
    if "avx512_bf16" in flags and isa not in ISAS_WITHOUT_BF16 and not capped_avx2:
        return "AVX-512 BF16"
    if "avx512f" in flags and not capped_avx2:
        return "AVX-512"
    if "avx2" in flags and isa not in ("SSE41", "AVX"):
        return "AVX2"
    return platform.machine() or "unknown"


def cpu_has_native_bf16():
    """Whether bf16 convolutions run natively here (AVX-512 BF16 or AMX), not emulated."""
    return cpu_capability() in ("AMX", "AVX-512 BF16")


# Compute capability from which a GPU has bf16 arithmetic (Ampere: A100, RTX 30xx, and later);
# below it (T4, V100) torch emulates bf16, slower than fp32.
NATIVE_BF16_CAPABILITY = (8, 0)


def cuda_has_native_bf16(device):
    """Whether the run's GPU computes bf16 natively, from its compute capability (not
    torch.cuda.is_bf16_supported(), which counts emulation and asks the current device)."""
    return tuple(torch.cuda.get_device_capability(device)) >= NATIVE_BF16_CAPABILITY


# --- precision, compilation and backends ---------------------------------------
def use_bf16(precision, device, training=True):
    """Whether to run under bfloat16 autocast.

    'auto' turns it on for training where the hardware has native bf16 (a CUDA GPU of
    compute capability 8.0 or later, or a CPU with AVX-512 BF16 or AMX); elsewhere, and for
    inference, 'auto' stays fp32, so released checkpoints give the authors' predictions to
    float precision. 'bf16' forces it, 'fp32' keeps the original numerics exactly.
    """
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if not training:
        return False
    if device.type == "cuda":
        return cuda_has_native_bf16(device)
    return cpu_has_native_bf16()


COMPILE_MODES = ("auto", "on", "off")
# Full batches from which compiling the encoder pays for itself (bench.py: compiling costs about
# 13-15 s once per process, 1.5 s with a warm cache; it saves about 2.8 s of a 64-turn fp32 step
# on an AVX2 CPU and about 0.4 s of a bf16 step on a native-bf16 one).
COMPILE_MIN_BATCHES = {"fp32": 10, "bf16": 50}


def cxx_compiler():
    """The C++ compiler torch.compile would use on the CPU, or None."""
    import shutil

    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def use_compile(mode, device, precision, full_batches, bf16=False):
    """Whether training compiles the encoder (torch.compile, README Performance).

    'on' and 'off' as asked. 'auto' where it pays: on the CPU fast path (not
    --precision fp32, the original numerics exactly) with a C++ compiler, for a run of
    at least COMPILE_MIN_BATCHES full batches (fewer in fp32, where a step gains more).
    """
    if mode != "auto":
        return mode == "on"
    return (device.type == "cpu" and precision != "fp32" and cxx_compiler() is not None
            and full_batches >= COMPILE_MIN_BATCHES["bf16" if bf16 else "fp32"])


# glibc's malloc: blocks up to 32 MiB (its largest mmap threshold) come from the heap and
# are reused; up to 256 MiB of freed heap is kept rather than handed back to the system.
MALLOC_MMAP_THRESHOLD = 32 * 2**20
MALLOC_TRIM_THRESHOLD = 256 * 2**20


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def glibc():
    """The C library if it is glibc (it has mallopt and malloc_trim), else None."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def reuse_freed_memory():
    """Let glibc reuse freed blocks of up to 32 MiB instead of returning them to the system.

    By default a block above a (dynamic) threshold is mapped afresh for every tensor, and
    every page of it is faulted in and zeroed by the kernel on first touch: a third of the
    time of a CPU evaluation pass. Evaluation passes are sized to stay under this threshold
    (model.CPU_TURNS_PER_PASS). Does nothing where the C library is not glibc.
    """
    libc = glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)) and \
        bool(libc.mallopt(M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))


def return_freed_memory():
    """Hand back to the system the freed heap that reuse_freed_memory keeps (up to 256 MiB): a
    server does so after each request, so that its resident memory does not creep up from
    request to request. Does nothing where the C library is not glibc."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


def configure_backends(device):
    """Memory reuse (reuse_freed_memory); on CUDA, cuDNN autotuning and no TF32 in cuBLAS or
    cuDNN, whatever the precision: fp32 stays fp32 on Ampere and later GPUs, so released
    checkpoints reproduce to float precision, and under bf16 autocast the layers the model
    keeps in fp32 on purpose (cnn_out, the GRU, the Transformer, Temp-CNN's convolutions, the
    heads) stay fp32; the bf16 convolutions have nothing to gain from TF32."""
    reuse_freed_memory()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


@contextlib.contextmanager
def backends_restored():
    """torch's process-wide flags that configure_backends sets (cuDNN autotuning, TF32 in cuDNN
    and cuBLAS) put back as they were before the block once it ends: a Predictor works in its
    user's process. Both of torch's APIs are kept, the legacy allow_tf32 switches and the
    fp32_precision strings that replace them; a legacy switch torch refuses to read (the two
    APIs were mixed) comes back through the strings alone. glibc's malloc settings
    (reuse_freed_memory) stay: glibc cannot say what they were."""
    b = torch.backends
    saved = (b.cudnn.benchmark, readable(lambda: b.cudnn.allow_tf32), b.cudnn.conv.fp32_precision,
             b.cudnn.rnn.fp32_precision, readable(torch.get_float32_matmul_precision),
             b.cuda.matmul.fp32_precision)
    try:
        yield
    finally:
        benchmark, cudnn_tf32, conv, rnn, matmul_precision, matmul = saved
        b.cudnn.benchmark = benchmark
        if cudnn_tf32 is not None:
            b.cudnn.allow_tf32 = cudnn_tf32          # also sets conv and rnn: theirs come next
        b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision = conv, rnn
        if matmul_precision is not None:
            torch.set_float32_matmul_precision(matmul_precision)    # also sets matmul's, next
        b.cuda.matmul.fp32_precision = matmul


def readable(read):
    """A legacy backend flag, or None where torch will not read it (set through the new API)."""
    try:
        return read()
    except RuntimeError:
        return None


@contextlib.contextmanager
def configured_backends(device):
    """configure_backends(device) for the block alone."""
    with backends_restored():
        configure_backends(device)
        yield


def use_channels_last(precision):
    """Channels-last convolutions on the fast path; 'fp32' keeps the original NCHW layout."""
    return precision != "fp32"


def autocast(device, enabled):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def seed_everything(seed):
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
