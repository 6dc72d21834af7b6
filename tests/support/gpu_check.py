"""What gpu_check.sh runs in Python, around the checks of tests/test_gpu.py:

    python tests/support/gpu_check.py probe [--dry-run]     # can torch use this machine's GPU?
    python tests/support/gpu_check.py faiss [--install]     # which faiss gives k-means on it
    python tests/support/gpu_check.py summary WORK GPU RC   # the summary of the checks' report

`probe` prints one line and exits GO (a GPU torch can use, or the dry run), NO_GPU (no NVIDIA
GPU at all: nothing to check) or CANNOT (a GPU that torch cannot use, and why).
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from types import SimpleNamespace

GO, CANNOT, NO_GPU = 0, 1, 3
# PyPI's faiss builds with GPU support, by the CUDA version they link: (from CUDA, up to but
# not including CUDA, distribution). From the wheels' requirements: faiss-gpu-cu11
# and faiss-gpu-cu12 link CUDA 11 and 12; faiss-gpu-cuvs 1.15 links CUDA 13 from 13.2 on
# (nvidia-cuda-runtime>=13.2, nvidia-cublas>=13.2), so that beside torch 2.13.0's own CUDA 13.0
# libraries (nvidia-cuda-runtime 13.0, nvidia-cublas 13.1, pinned) pip cannot install it.
FAISS_GPU_BUILDS = (((11, 0), (12, 0), "faiss-gpu-cu11"),
                    ((12, 0), (13, 0), "faiss-gpu-cu12"),
                    ((13, 2), (14, 0), "faiss-gpu-cuvs"))
PIP = ".venv/bin/pip"
FAISS_CPU = "faiss-cpu"


# --- can torch use the GPU this machine shows? ---------------------------------------------
def nvidia_smi(*args):
    """nvidia-smi's output, or None where it is not installed or fails (no driver loaded)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def machine_gpus():
    """The NVIDIA GPUs this machine shows, whatever torch makes of them: the names nvidia-smi
    lists, the device files, and the driver's version and the newest CUDA it supports."""
    listing = nvidia_smi("-L") or ""
    names = [re.sub(r"\s*\(UUID:.*$", "", line.split(":", 1)[1]).strip()
             for line in listing.splitlines() if re.match(r"GPU \d+:", line)]
    banner = (nvidia_smi() or "") if names else ""
    driver = re.search(r"Driver Version:\s*([\d.]+)", banner)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", banner)
    return SimpleNamespace(names=names, nodes=sorted(glob.glob("/dev/nvidia[0-9]*")),
                           driver=driver and driver.group(1), driver_cuda=cuda and cuda.group(1))


def version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def shown(gpus):
    if gpus.names:
        return f"{len(gpus.names)} NVIDIA GPU(s) ({gpus.names[0]}; nvidia-smi -L)"
    return f"an NVIDIA GPU ({', '.join(gpus.nodes)}; nvidia-smi not found or failing)"


def why_torch_cannot_use(gpus, torch_version, torch_cuda, torch_says=None, visible=None):
    """The one line that says why torch cannot use the GPU(s) `gpus` shows: a CPU build of
    torch, a driver older than torch's CUDA, or (the driver being recent enough) what is left."""
    start = f"FAILED - this machine shows {shown(gpus)}, but torch {torch_version}"
    if torch_cuda is None:
        return (f"{start} is a CPU build (torch.version.cuda is None): install a CUDA build of "
                "torch (on Linux, torch from PyPI is one; README, Install) and run gpu_check.sh again")
    start += f" (built for CUDA {torch_cuda}) cannot use it: torch.cuda.is_available() is False"
    said = f" (torch: {torch_says})" if torch_says else ""
    if gpus.driver_cuda and version_tuple(gpus.driver_cuda) < version_tuple(torch_cuda):
        return (f"{start}{said}; the driver {gpus.driver} supports CUDA {gpus.driver_cuda} at most, "
                f"older than torch's CUDA {torch_cuda}: update the NVIDIA driver, or install a torch "
                f"build for CUDA {gpus.driver_cuda} or older (pytorch.org)")
    driver = (f"the driver {gpus.driver} supports CUDA {gpus.driver_cuda}, enough for torch's"
              if gpus.driver_cuda else "the driver's CUDA version is unknown (nvidia-smi not found or failing)")
    devices = "unset" if visible is None else f"'{visible}'"
    return (f"{start}{said}; {driver}: check CUDA_VISIBLE_DEVICES ({devices}) and that this user "
            "can open /dev/nvidia*")


def describe_gpu(torch):
    p = torch.cuda.get_device_properties(0)
    return (f"{p.name}, compute {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, "
            f"{torch.cuda.device_count()} GPU(s), torch {torch.__version__}, CUDA {torch.version.cuda}")


def probe(dry_run):
    """Print one line and return GO, NO_GPU or CANNOT."""
    try:
        import torch
    except Exception as err:        # a broken environment: say so in one line
        print(f"FAILED - torch does not import ({type(err).__name__}: {str(err).splitlines()[0]}): "
              "run bash setup_env.sh, or install torch (README, Install)")
        return CANNOT
    if dry_run:
        print("DRY RUN on the CPU (no GPU checked)")
        return GO
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        usable = torch.cuda.is_available()
    if usable:
        print(describe_gpu(torch))
        return GO
    gpus = machine_gpus()
    if not gpus.names and not gpus.nodes:
        print(f"SKIPPED - no CUDA device: nothing checked (no NVIDIA GPU on this machine; torch "
              f"{torch.__version__}, CUDA build {torch.version.cuda})")
        return NO_GPU
    says = next((str(w.message).strip().split(". ")[0] for w in caught if "CUDA" in str(w.message)), None)
    print(why_torch_cannot_use(gpus, torch.__version__, torch.version.cuda, says,
                               os.environ.get("CUDA_VISIBLE_DEVICES")))
    return CANNOT


# --- faiss for k-means on the GPU ---------------------------------------------------------
def faiss_build_for(torch_cuda):
    """The PyPI faiss build with GPU support that links torch's CUDA version, or None."""
    if not torch_cuda:
        return None
    cuda = version_tuple(torch_cuda)
    return next((name for low, high, name in FAISS_GPU_BUILDS if low <= cuda < high), None)


def faiss_advice(torch_cuda):
    """One sentence: what to install for k-means on the GPU beside torch built for `torch_cuda`."""
    build = faiss_build_for(torch_cuda)
    if build:
        return (f"for torch's CUDA {torch_cuda} install {build}: {PIP} uninstall -y {FAISS_CPU} && "
                f"{PIP} install {build} (or bash gpu_check.sh --install-faiss)")
    if not torch_cuda:
        return "torch is a CPU build: no faiss GPU build to match"
    instead = "install torch's CUDA 12 build from the index pytorch.org gives, then faiss-gpu-cu12"
    if version_tuple(torch_cuda)[0] == 13:          # 13.0 and 13.1, below faiss-gpu-cuvs's 13.2
        return (f"no faiss build on PyPI links torch's CUDA {torch_cuda} (faiss-gpu-cu12 links CUDA 12; "
                f"faiss-gpu-cuvs needs CUDA 13.2 or later, which torch's own CUDA libraries exclude): {instead}")
    return f"no faiss build on PyPI is known to link torch's CUDA {torch_cuda}: {instead}"


def faiss_distributions():
    """The installed distributions that provide the `faiss` package (faiss-cpu, faiss-gpu-cu12, …)."""
    from importlib.metadata import packages_distributions

    return sorted(set(packages_distributions().get("faiss", [])))


def faiss_gpus():
    """(faiss version, whether it has GPU support, how many GPUs it sees), in a fresh process:
    one that imported faiss before an install still holds the old build."""
    code = ("import faiss, json; g = hasattr(faiss, 'StandardGpuResources'); "
            "print(json.dumps([faiss.__version__, g, faiss.get_num_gpus() if g else 0]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        return None, False, 0
    return tuple(json.loads(proc.stdout))


def install_faiss(build):
    """faiss-cpu out, `build` in (both install the `faiss` package); pip says what fails."""
    for cmd in ([PIP, "uninstall", "-y", "-q", FAISS_CPU], [PIP, "install", "-q", build]):
        print("gpu_check: " + " ".join(cmd), file=sys.stderr, flush=True)
        if subprocess.run(cmd, stdout=sys.stderr).returncode != 0:     # gpu_check.sh reads stdout
            return


def faiss_status(dry_run, install):
    """One line: which faiss is installed and where k-means will run (installing the matching
    GPU build first where asked)."""
    import torch

    version, gpu, count = faiss_gpus()
    build = faiss_build_for(torch.version.cuda)
    if install and not dry_run and not (gpu and count) and build:
        install_faiss(build)
        version, gpu, count = faiss_gpus()
    installed = faiss_distributions()
    which = f"faiss {version} ({', '.join(installed) or 'not installed'})"
    if dry_run:
        return f"{which}: the dry run checks k-means on the CPU path"
    if gpu and count:
        other = "" if build in installed else (f" (not the build for torch's CUDA {torch.version.cuda}: "
                                               "(b) shows whether it runs beside torch)")
        return f"{which} sees {count} GPU(s): k-means runs on the GPU{other}"
    if gpu:
        return (f"{which} has GPU support but sees no GPU (faiss.get_num_gpus() is 0): k-means runs "
                f"on the CPU; {faiss_advice(torch.version.cuda)}")
    return f"{which} has no GPU support: k-means runs on the CPU; {faiss_advice(torch.version.cuda)}"


# --- the summary --------------------------------------------------------------------------
CHECKS = (("test_configure_backends", "(a) TF32 off under fp32"),
          ("test_cuda_predictions", "(a) CUDA predictions = CPU fp32 within 1e-4"),
          ("test_kmeans", "(b) the training's k-means on the GPU (faiss) = CPU partition"),
          ("test_bf16_training", "(c) bf16 training on the GPU vs CPU fp32"),
          ("test_bench_on_cuda", "(d) bench.py --device cuda table"),
          ("test_torchrun_on_every_gpu", "(e) torchrun on every GPU: validation losses = one process's"),
          ("test_processes_take_the_steps_of_one", "(f) N processes take the steps of one (float64)"))


def read_result(work, name):
    """A check's figures, as its test wrote them to the work folder (None if it did not)."""
    path = os.path.join(work, name)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def numbers(values, digits=0):
    return ", ".join(f"{v:.{digits}f}" for v in values)


def check_lines(junit):
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name")
        label = next((text for key, text in CHECKS if name.startswith(key)), name)
        param = name[name.index("["):] if "[" in name else ""
        status, why = "PASSED", ""
        for tag, word in (("failure", "FAILED"), ("error", "ERROR"), ("skipped", "SKIPPED")):
            node = case.find(tag)
            if node is not None:
                status = word
                why = (node.get("message") or "").splitlines()[0][:400] if node.get("message") else ""
        yield f"  {status:7s} {label}" + (f" {param}" if param else "") + (f" - {why}" if why else "")


def figure_lines(work):
    t = read_result(work, "b_kmeans.json")
    if t:
        yield (f"  (b) k-means beside a network on {t['device']}: {t['runs']} runs through faiss.{t['index']}"
               + (f" on GPU {t['gpu_index']}" if t["gpu_index"] is not None else "")
               + f" (faiss {t['faiss']}, {t['faiss_gpus']} GPU(s) seen), each the CPU's partition")
    t = read_result(work, "c_training.json")
    if t:
        yield (f"  (c) Test1 CCC {t['emotion']} after {t['epochs']} epoch(s): {t['gpu_precision']} on the GPU "
               f"{t['test1_ccc_cuda']:.4f}, CPU fp32 {t['test1_ccc_cpu_fp32']:.4f}; seconds per epoch GPU "
               f"{numbers(t['seconds_cuda'])}, CPU {numbers(t['seconds_cpu'])}")
    t = read_result(work, "e_torchrun.json")
    if t:
        yield (f"  (e) validation loss per epoch over {t['epochs']} demo epochs: torchrun with {t['gpus']} "
               f"process(es) ({t['backend']}) {numbers(t['val_loss_torchrun'], 4)}; one process "
               f"{numbers(t['val_loss_one_process'], 4)}; largest difference {t['largest_difference']:.4f} "
               f"(allowed {t['tolerance']})")
        yield (f"  (e) seconds per epoch: torchrun {numbers(t['seconds_torchrun'])}; one process "
               f"{numbers(t['seconds_one_process'])}")
        if t["gpus"] == 1:
            yield ("  (e) one GPU: torchrun ran one process, so NCCL moved no data (the distributed code "
                   "ran, its exchanges between processes did not); (f) needs 2 or more GPUs")
    t = read_result(work, "f_steps.json")
    if t:
        empty = ", ".join(f"process {rank} in {n}" for rank, n in t["empty_shares"].items())
        yield (f"  (f) {t['processes']} processes ({t['backend']}, {t['device']}) took the steps of one "
               f"within {t['tolerance']} in float64 (largest difference {t['largest_difference']:.1e}) for "
               f"{', '.join(t['configs'])}; {t['batches']} batches of up to {t['batch_turns']} turns shared "
               f"out whole, an empty share for {empty} of them")
    table = os.path.join(work, "bench_cuda.txt")
    if os.path.isfile(table):
        yield f"  bench table: {table}"


def summary(work, gpu, rc):
    print(f"\ngpu_check summary on {gpu}")
    junit = os.path.join(work, "junit.xml")
    if not os.path.isfile(junit):
        print(f"  no test report (pytest exit status {rc}); see {work}/pytest.log")
        return
    for line in list(check_lines(junit)) + list(figure_lines(work)):
        print(line)
    print(f"  overall: {'PASSED' if rc == 0 else f'FAILED (pytest exit status {rc})'}; log: {work}/pytest.log")


def main(argv):
    command, args = argv[0], argv[1:]
    if command == "probe":
        return probe("--dry-run" in args)
    if command == "faiss":
        print(faiss_status("--dry-run" in args, "--install" in args))
        return 0
    if command == "summary":
        summary(args[0], args[1], int(args[2]))
        return 0
    raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
