"""The report of a reproduce.py sweep: results.csv read back, cell statistics (mean ± sample
std over seeds), paired t-test and Wilcoxon comparisons between the levels of every factor,
rendered as results.md and drawn as results.png (method §8).

It reads results.csv alone, so any way of running the sweep's runs shares it.
"""
import csv
import itertools
import os

import numpy as np

from utils import EMOTIONS, TEMPORAL_TYPES, TEST_SPLIT, UserError, atomic_path

COLUMNS = ("type", "attribute", "K", "unlabel", "seed", "epochs", "batch", "split", "CCC",
           "best_epoch", "seconds", "precision", "device", "commit", "status", "error", "init_from")
# Columns a results.csv of an earlier version lacks, and the value they stand for there.
LATER_COLUMNS = {"init_from": "none"}
FROM_SCRATCH = LATER_COLUMNS["init_from"]
# The factors compared pairwise (CSV column, name in results.md); the others are context.
FACTORS = (("type", "temporal type"), ("K", "K"), ("unlabel", "unlabel"),
           ("precision", "precision"), ("init_from", "starting point"))
CONTEXT = ("K", "unlabel", "precision", "epochs", "batch", "split", "init_from")
MIN_PAIRED = 3
ATTRIBUTE_NAMES = {"Act": "arousal", "Dom": "dominance", "Val": "valence"}


def read_results(out):
    """results.csv as typed rows (CCC a float for 'ok' rows)."""
    path = os.path.join(out, "results.csv")
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: run a sweep with --out {out} first")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or []) and c not in LATER_COLUMNS]
        if missing:
            raise UserError(f"{path} lacks the column(s) {', '.join(missing)}")
        rows = list(reader)
    try:
        for row in rows:
            for key, value in LATER_COLUMNS.items():
                row[key] = row.get(key) or value
            for key in ("K", "unlabel", "seed", "epochs", "batch"):
                row[key] = int(row[key])
            row["CCC"] = float(row["CCC"]) if row["status"] == "ok" else None
            if row["type"] not in TEMPORAL_TYPES or row["attribute"] not in EMOTIONS:
                raise ValueError(f"unknown type or attribute {row['type']!r}, {row['attribute']!r}")
    except ValueError as err:
        raise UserError(f"{path}: a malformed value ({err})")
    return rows


def context_of(row, without=None):
    """What a row's cell shares with others: its K, unlabel, precision, epochs, batch and
    split (a table of results.md); with `without`, also its type, less that factor (the
    runs a paired comparison of `without`'s levels pairs up)."""
    keys = CONTEXT if without is None else ("type",) + CONTEXT
    return tuple((k, row[k]) for k in keys if k != without)


def describe(context):
    names = {"K": "K = {}", "unlabel": "unlabel {}", "precision": "precision {}",
             "epochs": "epochs {}", "batch": "batch {}", "split": "{}", "type": "{}",
             "init_from": "from {}"}
    return ", ".join(names[k].format(v) for k, v in context
                     if (k, v) != ("init_from", FROM_SCRATCH))


def unique(values):
    return list(dict.fromkeys(values))


def cell_stats(values):
    """(mean, sample std with ddof = 1 or None for one value, n)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None), len(v)


def format_cell(values):
    if not values:
        return "—"
    mean, std, n = cell_stats(values)
    return f"{mean:.4f} ± {std:.4f} (n = {n})" if std is not None else f"{mean:.4f} (n = 1)"


def tables(rows):
    """{context: {(type, attribute): [CCC over seeds]}} of the rows that finished."""
    out = {}
    for row in rows:
        if row["status"] == "ok":
            out.setdefault(context_of(row), {}).setdefault((row["type"], row["attribute"]), []).append(row["CCC"])
    return out


def paired_test(a, b):
    """Mean difference a − b and the two tests' results over paired seeds, as text."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = a - b
    n = len(d)
    if n < MIN_PAIRED:
        none = f"no test possible ({n} paired seed(s), at least {MIN_PAIRED} needed)"
        return f"{d.mean():+.4f}", none, none
    from scipy import stats

    if np.all(d == d[0]):
        t_text = "undefined (all differences equal)"
    else:
        t_text = f"{stats.ttest_rel(a, b).pvalue:.4g}"
    nonzero = d[d != 0]
    if nonzero.size == 0:
        w_text = "undefined (all differences zero)"
    else:
        # Zero differences dropped (Wilcoxon's convention); the exact null distribution
        # when the |differences| are distinct, else the normal approximation.
        exact = len(np.unique(np.abs(nonzero))) == nonzero.size
        p = stats.wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided",
                           method="exact" if exact else "asymptotic").pvalue
        dropped = n - nonzero.size
        w_text = (f"{p:.4g} ({'exact' if exact else 'normal approximation, ties'}"
                  f"{f'; {dropped} zero difference(s) dropped' if dropped else ''})")
    return f"{d.mean():+.4f}", t_text, w_text


def comparisons(rows, emo):
    """Every paired comparison for one attribute: (factor, first, second, context, n, texts)."""
    ok = [r for r in rows if r["status"] == "ok" and r["attribute"] == emo]
    out = []
    for key, label in FACTORS:
        levels = unique(r[key] for r in ok)
        for first, second in itertools.combinations(levels, 2):
            for ctx in unique(context_of(r, key) for r in ok):
                xa = {r["seed"]: r["CCC"] for r in ok if r[key] == first and context_of(r, key) == ctx}
                xb = {r["seed"]: r["CCC"] for r in ok if r[key] == second and context_of(r, key) == ctx}
                seeds = sorted(set(xa) & set(xb))
                if seeds:
                    texts = paired_test([xa[s] for s in seeds], [xb[s] for s in seeds])
                    out.append((label, first, second, ctx, len(seeds)) + texts)
    return out


def render_markdown(rows):
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    splits = ", ".join(unique(r["split"] for r in rows)) or TEST_SPLIT
    lines = ["# Reproduction results", "",
             f"{len(rows)} run(s) in results.csv: {len(ok)} finished, {len(failed)} failed "
             f"(left out of the tables). Each cell is the {splits} CCC over seeds: mean ± "
             "sample standard deviation (ddof = 1), n = number of seeds; a cell with n = 1 has "
             "no standard deviation.", ""]
    for ctx, cells in tables(rows).items():
        lines += [f"## {describe(ctx)}", "", "| Temporal modelling | Act | Dom | Val |", "|---|---|---|---|"]
        for mt in [t for t in TEMPORAL_TYPES if any(t == mt for mt, _ in cells)]:
            lines.append(f"| {mt} | " + " | ".join(format_cell(cells.get((mt, e), [])) for e in EMOTIONS) + " |")
        lines.append("")
    lines += ["## Paired comparisons over seeds", "",
              "Each comparison pairs the runs of the same seed that differ in one factor only; "
              "difference = first − second, n = number of paired seeds. Tests (two-sided): the "
              "paired t-test (scipy.stats.ttest_rel) and the Wilcoxon signed-rank test "
              "(scipy.stats.wilcoxon) on the non-zero differences (zero differences dropped, "
              "Wilcoxon's convention), with its exact null distribution when the absolute "
              f"differences are distinct, else the normal approximation. With fewer than {MIN_PAIRED} "
              "paired seeds no test is made.", ""]
    any_comparison = False
    for emo in EMOTIONS:
        found = comparisons(rows, emo)
        if not found:
            continue
        any_comparison = True
        lines += [f"### {emo} ({ATTRIBUTE_NAMES[emo]})", "",
                  "| factor | first − second | at | n | mean difference | paired t-test p | Wilcoxon signed-rank p |",
                  "|---|---|---|---|---|---|---|"]
        for label, first, second, ctx, n, diff, t_text, w_text in found:
            lines.append(f"| {label} | {first} − {second} | {describe(ctx)} | {n} | {diff} | {t_text} | {w_text} |")
        lines.append("")
    if not any_comparison:
        lines += ["No factor varies among the finished runs: nothing to compare.", ""]
    if failed:
        lines += ["## Failed runs", "", "| run | status | error |", "|---|---|---|"]
        for r in failed:
            start = "" if r["init_from"] == FROM_SCRATCH else f", from {r['init_from']}"
            name = (f"{r['type']} {r['attribute']}, K = {r['K']}, unlabel {r['unlabel']}, "
                    f"{r['precision']}, epochs {r['epochs']}{start}, seed {r['seed']}")
            lines.append(f"| {name} | {r['status']} | {r['error'].replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def plot_results(rows, path):
    """CCC per cell (mean ± sample std, each seed a grey dot), one panel per attribute; one
    colour per combination of the other factors, named in the legend below the panels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = tables(rows)
    emos = [e for e in EMOTIONS if any(e == a for c in cells.values() for _, a in c)]
    types = [t for t in TEMPORAL_TYPES if any(t == mt for c in cells.values() for mt, _ in c)]
    n_panels = max(len(emos), 1)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels + 1, 4.2 + 0.25 * len(cells)),
                             squeeze=False)
    splits = ", ".join(unique(r["split"] for r in rows)) or TEST_SPLIT
    if not emos:
        axes[0, 0].text(0.5, 0.5, "no finished runs", ha="center", va="center")
        axes[0, 0].set_axis_off()
    width = 0.8 / max(len(cells), 1)
    handles = {}
    for ax, emo in zip(axes[0], emos):
        for i, (ctx, c) in enumerate(cells.items()):
            offset = (i - (len(cells) - 1) / 2) * width
            xs, means, stds = [], [], []
            for j, mt in enumerate(types):
                values = c.get((mt, emo))
                if not values:
                    continue
                mean, std, _ = cell_stats(values)
                xs.append(j + offset)
                means.append(mean)
                stds.append(std or 0.0)
                ax.plot([j + offset + width / 4] * len(values), values, ".", color="grey", ms=4)
            if xs:
                handles[describe(ctx)] = ax.errorbar(xs, means, yerr=stds, fmt="o", capsize=4,
                                                     color=f"C{i % 10}")
        ax.set_xticks(range(len(types)))
        ax.set_xticklabels(types)
        ax.set_xlim(-0.5, len(types) - 0.5)
        ax.set_xlabel("temporal modelling")
        ax.set_ylabel(f"{splits} CCC (mean ± sample std over seeds)")
        ax.set_title(f"{emo} ({ATTRIBUTE_NAMES[emo]})")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("CCC per cell over seeds; grey dots are the single seeds", fontsize=10)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", fontsize=8,
                   ncol=1, frameon=False)
    fig.tight_layout(rect=(0, 0.06 * len(handles) / (1 + 0.06 * len(handles)) + 0.02, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_report(out, figure=True):
    """results.md (and results.png) from results.csv alone."""
    rows = read_results(out)
    with atomic_path(os.path.join(out, "results.md")) as tmp:
        with open(tmp, "w") as f:
            f.write(render_markdown(rows))
    if figure:
        plot_results(rows, os.path.join(out, "results.png"))
