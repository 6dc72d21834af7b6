"""The labels file and its splits (method §2): which turns a split holds, their
ratings, and the feature file of each.
"""
import os
import warnings

import numpy as np

from deepemocluster.corpus import LABELS_CSV
from utils import EMOTIONS, LABEL_COLUMN, PYTHON, TRAIN_SPLIT, VALIDATION_SPLITS, UserError

MISSING_LABEL_TEXT = ("", "nan", "na", "n/a", "none")
NAMES_SHOWN = 5


def labels_not_found(csv_path):
    """The message for a missing labels file, with the ways on: the demo corpus (when the path
    is its default one) made by make_demo_corpus.py and feat_extract.py, or one's own corpus
    named with --labels."""
    own = "give your own corpus's labels file with --labels FILE (and its features with --features DIR)"
    if os.path.abspath(csv_path) != os.path.abspath(LABELS_CSV):
        return f"labels file not found: {csv_path}; {own}"
    return (f"labels file not found: {csv_path}, the demo corpus's (not made yet): make the demo corpus "
            f"with `{PYTHON} make_demo_corpus.py` and its features with `{PYTHON} feat_extract.py`; "
            f"or {own}")


def read_label_table(csv_path, columns):
    """The labels file as a table of strings; `columns` must be present (found by name,
    in any order; other columns are ignored)."""
    import pandas as pd

    if not os.path.isfile(csv_path):
        raise UserError(labels_not_found(csv_path))
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_filter=False,
                            skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise UserError(f"labels file {csv_path} lacks the column(s) {', '.join(columns)} "
                        "(it has: no header)")
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError) as err:
        raise UserError(f"labels file {csv_path} is not a readable CSV file "
                        f"({(str(err).splitlines() or [type(err).__name__])[0]})")
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise UserError(f"labels file {csv_path} lacks the column(s) {', '.join(missing)} "
                        f"(it has: {', '.join(table.columns) or 'no header'})")
    return table


def label_splits(csv_path):
    """The values of `Split_Set` in the labels file, in order of first appearance."""
    table = read_label_table(csv_path, ["Split_Set"])
    return list(dict.fromkeys(s.strip() for s in table["Split_Set"]))


def validation_split(csv_path, asked="auto"):
    """The split used for validation: `asked`, or with 'auto' `Validation` (v1.8) if the
    file has it, else `Development` (v1.11 and later)."""
    splits = label_splits(csv_path)
    if asked != "auto":
        return asked
    for name in VALIDATION_SPLITS:
        if name in splits:
            return name
    raise UserError(f"labels file {csv_path} has neither a Validation nor a Development split "
                    f"(its splits: {', '.join(splits) or 'none'}); name one with --val-split")


def turn_name(file_name):
    """The turn a FileName names: its feature file's stem (no folder, no .wav)."""
    return os.path.splitext(os.path.basename(file_name.strip()))[0]


def check_turn_names(csv_path, names, splits, split):
    """Refuse a turn listed more than once in `split` (it would count twice), or listed in
    `split` and in another split too (train/test leakage)."""
    mine = names[splits == split]
    repeated = mine[mine.duplicated(keep=False)]
    if len(repeated):
        counts = repeated.value_counts()
        shown = ", ".join(f"{n} ({counts[n]} rows)" for n in list(dict.fromkeys(repeated))[:NAMES_SHOWN])
        raise UserError(f"labels file {csv_path} lists {len(counts)} turn(s) of the split '{split}' "
                        f"more than once, e.g. {shown}: each turn needs one row (a repeated row "
                        "would train or test on that turn twice)")
    shared = splits[(splits != split) & names.isin(set(mine))]
    if len(shared):
        parts = []
        for other in dict.fromkeys(shared):
            both = list(dict.fromkeys(names[shared.index[shared == other]]))
            parts.append(f"{len(both)} in '{other}' (e.g. {', '.join(both[:NAMES_SHOWN])})")
        raise UserError(f"labels file {csv_path} lists turns of the split '{split}' in another "
                        f"split too: {'; '.join(parts)}. A turn in two splits leaks test data into "
                        "training (train/test leakage): give each turn one split")


def read_labels(csv_path, split, emotions=()):
    """File stems of one split and, per attribute asked for, their labels (on the corpus's own
    rating scale: 1–7 in MSP-Podcast; any numeric scale works, see norm_para.py).

    Rows of the split that lack a label asked for are left out with a warning that
    gives the count; a split without any such label (Test3 of v1.11 and later) is refused,
    and so is a turn listed twice in the split or also in another split.
    """
    needed = ["FileName", "Split_Set"] + [LABEL_COLUMN[e] for e in emotions]
    table = read_label_table(csv_path, needed)
    splits = table["Split_Set"].str.strip()
    rows = table[splits == split]
    if rows.empty:
        raise UserError(f"labels file {csv_path} has no rows in the split '{split}' "
                        f"(its splits: {', '.join(dict.fromkeys(splits)) or 'none'})")
    check_turn_names(csv_path, table["FileName"].map(turn_name), splits, split)
    keep = np.ones(len(rows), dtype=bool)
    for emo in emotions:
        text = rows[LABEL_COLUMN[emo]].str.strip()
        absent = text.str.lower().isin(MISSING_LABEL_TEXT).to_numpy()
        if absent.all():
            raise UserError(f"the split '{split}' of {csv_path} has no {LABEL_COLUMN[emo]} labels "
                            "(like Test3 of MSP-Podcast v1.11 and later): test on a labelled split, "
                            "or predict its audio with prediction_process.py")
        if absent.any():
            warnings.warn(f"{int(absent.sum())} of {len(rows)} {split} row(s) of {csv_path} have no "
                          f"{LABEL_COLUMN[emo]} label and are left out", stacklevel=2)
        keep &= ~absent
    rows = rows[keep]
    stems = [turn_name(name) for name in rows["FileName"]]
    labels = {}
    for emo in emotions:
        column = LABEL_COLUMN[emo]
        try:
            labels[emo] = np.array([float(v) for v in rows[column]])
        except ValueError as err:
            raise UserError(f"labels file {csv_path}: a non-numeric {column} value ({err})")
    return stems, labels



def label_norm_term(csv_path):
    """The Train split's stems and each attribute's label mean and population std over it
    (method §3: training regresses (label − mean) / std)."""
    stems, labels = read_labels(csv_path, TRAIN_SPLIT, EMOTIONS)
    term = {}
    for emo in EMOTIONS:
        term[f"{emo}_mean"] = float(np.mean(labels[emo]))
        term[f"{emo}_std"] = float(np.std(labels[emo]))
    return stems, term

def feature_paths(feat_dir, stems):
    """The .mat of every stem; refuse with the count and first names of missing ones."""
    paths = [os.path.join(feat_dir, s + ".mat") for s in stems]
    missing = [s for s, p in zip(stems, paths) if not os.path.isfile(p)]
    if missing:
        raise UserError(f"{len(missing)} of {len(stems)} feature files missing in {feat_dir}, "
                        f"e.g. {', '.join(m + '.mat' for m in missing[:5])}. "
                        "Run feat_extract.py first (see README).")
    return paths
