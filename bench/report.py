"""The report: the header (machine, CPU capability, settings), table rows and their text table, the JSON."""
import json
import os

from utils import atomic_path


def row(name, unit, value, baseline=None, better="higher", samples=None, baseline_samples=None, note="",
        precision=None):
    """One line of the table. `ratio` is how many times better than the baseline column:
    value/baseline for rates (better 'higher'), baseline/value for times (better 'lower'),
    value/baseline for neutral rows (better '-'). `precision` is one string, or
    (fast path's, baseline's)."""
    if isinstance(precision, tuple):
        prec, base_prec = precision
    else:
        prec, base_prec = precision, None
    if baseline in (None, 0) or value in (None, 0):
        ratio = None
    else:
        ratio = baseline / value if better == "lower" else value / baseline
    return {"measurement": name, "unit": unit, "value": value, "baseline": baseline, "ratio": ratio,
            "better": better, "precision": prec, "baseline_precision": base_prec,
            "samples": samples or [], "baseline_samples": baseline_samples or [], "note": note}


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"


def fmt_precision(r):
    if not r.get("precision"):
        return "-"
    return r["precision"] + (f"/{r['baseline_precision']}" if r.get("baseline_precision") else "")


def table_lines(rows):
    header = ("measurement", "unit", "precision", "value", "baseline", "ratio", "better")
    table = [header] + [(r["measurement"], r["unit"], fmt_precision(r), fmt(r["value"]), fmt(r["baseline"]),
                         "-" if r["ratio"] is None else f"{r['ratio']:.2f}x", r["better"]) for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(header))]
    align = ["<", "<", "<", ">", ">", ">", "<"]
    lines = []
    for k, t in enumerate(table):
        lines.append("  ".join(f"{c:{a}{w}}" for c, a, w in zip(t, align, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        if r["note"]:
            lines.append(f"  * {r['measurement'].strip()}: {r['note']}")
    return lines


def cpu_line(info):
    """The header's description of the CPU capability, saying how it was capped if it was."""
    cap, native = info["cpu_capability"], info["cpu_capability_native"]
    env = " ".join(f"{k}={v}" for k, v in info["cpu_isa_environment"].items())
    if info["cpu_isa_emulation"]:
        how = (f"{cap}, EMULATED (--cpu-isa {info['cpu_isa_emulation']}) on a CPU with {native}: "
               f"{env}; the clock, caches and memory are this machine's")
    elif cap != native:
        how = f"{cap}, capped by the environment ({env}) on a CPU with {native}"
    else:
        how = f"{cap} (native)" + (f", environment: {env}" if env else "")
    seen = []
    if info.get("onednn_isa"):
        seen.append(f"oneDNN runs {info['onednn_isa']}")
    seen.append(f"ATen {info['aten_cpu_capability']}")
    if info.get("faiss"):
        seen.append(f"faiss {info['faiss']}")
    return f"{how}; {', '.join(seen)}; native bf16: {'yes' if info['cpu_native_bf16'] else 'no'}"


def header_lines(info, settings):
    gpu = ""
    if "gpu" in info:
        gpu = (f" ({info['gpu']}, compute {info['gpu_capability']}, {info['gpu_memory_gib']:.0f} GiB, "
               f"native bf16 {'yes' if info['gpu_bf16'] else 'no'}, faiss GPU {'yes' if info.get('faiss_gpu') else 'no'})")
    mem = f", {info['memory_gib']:.0f} GiB" if info.get("memory_gib") else ""
    lines = [f"machine : {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable){mem}, "
             f"torch {info['torch']}, python {info['python']}, device {info['device']}{gpu}",
             f"cpu     : {cpu_line(info)}"]
    if settings:
        lines.append(f"precision: the fast path trains in {settings['train_precision']} and infers in "
                     f"{settings['infer_precision']}, channels-last {settings['channels_last']}, compiled encoder "
                     f"{'yes' if settings['compiled'] else 'no'} (main.py --compile, for a 30-epoch run of "
                     f"this corpus); the baseline "
                     f"runs in {settings['baseline_precision']}, NCHW (column 'precision': fast/baseline)")
        lines.append("settings: " + ", ".join(f"{k} {v}" for k, v in settings.items() if k not in (
            "train_precision", "infer_precision", "channels_last", "baseline_precision", "compiled")))
        lines.append("baseline: the original design - fp32, NCHW, no autocast, each .mat re-read once per "
                     "chunk, synchronous batches; prediction one file and one model at a time")
        lines.append("ratio   : times better than the baseline column (rates: value/baseline; seconds: "
                     "baseline/value); rows marked '-' compare with the reference the note names")
    return lines


def write_json(path, obj):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
