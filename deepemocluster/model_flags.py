"""--release NAME for prediction_process.py, export_onnx.py and online_testing.py: the authors'
released models (fetched by fetch_models.py) with the settings their file names encode; and
the flags that pick the three attribute models of prediction and export.

The flags a release sets get no argparse default: left out, they take the release's
value with --release and their usual default without. Given explicitly, they must
agree with the release.
"""
import argparse
import os

from deepemocluster import releases
from utils import DEFAULT_CLUSTERS, EMOTIONS, UserError, add_model_args, at_least

# dest → the flag that sets it, for the flags a release decides.
RELEASE_FLAGS = {"epochs": "-ep", "batch_size": "-batch", "num_clusters": "-nc",
                 "unlabel_size": "-unlabel", "model_type": "-mt", "model_dir": "--model-dir",
                 "norm_dir": "--norm-dir"}


def add_release_flag(parser):
    """Add --release and defer the defaults of the flags it sets; returns those defaults
    (pass them to apply_release after parsing)."""
    parser.add_argument("--release", metavar="NAME", choices=sorted(releases.RELEASES),
                        help="use the authors' released models NAME (" + ", ".join(releases.RELEASES)
                             + "), fetched with `.venv/bin/python fetch_models.py NAME`: sets the model and "
                               "NormTerm folders, -ep, -batch, -nc, -unlabel (and -mt when the "
                               "release has one type)")
    defaults = {dest: parser.get_default(dest) for dest in RELEASE_FLAGS}
    parser.set_defaults(**{dest: None for dest in RELEASE_FLAGS})
    return defaults


def apply_release(args, defaults, emotion=None):
    """Fill in the flags left out: from --release if given, else `defaults`.

    With `emotion` (online_testing.py), -nc and -unlabel are that attribute's K and N;
    without (prediction), lists of the three (Act, Dom, Val). A flag given explicitly
    that disagrees with the release, or a release not fetched, is a UserError.
    """
    given = {dest for dest in RELEASE_FLAGS if getattr(args, dest) is not None}
    values = defaults
    if args.release:
        values = release_settings(args.release, args.model_type or defaults["model_type"], emotion)
        for dest in sorted(given, key=list(RELEASE_FLAGS).index):
            if not same_setting(dest, getattr(args, dest), values[dest]):
                flag = RELEASE_FLAGS[dest]
                raise UserError(f"{flag} {shown(getattr(args, dest))} contradicts --release "
                                f"{args.release}, which sets {flag} {shown(values[dest])}: leave "
                                f"{flag} out, or leave out --release")
        root = releases.RELEASED_DIR
        releases.check_release(args.release, values["model_type"], root)
    for dest in set(RELEASE_FLAGS) - given:
        setattr(args, dest, values[dest])
    return args


def release_settings(name, default_type, emotion=None):
    """The value of every flag in RELEASE_FLAGS for the release `name`."""
    release = releases.RELEASES[name]
    model_dir, norm_dir = releases.release_dirs(name, releases.RELEASED_DIR)
    types = release.temporal_types
    if emotion:
        clusters, unlabel = release.clusters[emotion], release.unlabel[emotion]
    else:
        clusters = [release.clusters[e] for e in EMOTIONS]
        unlabel = [release.unlabel[e] for e in EMOTIONS]
    return {"epochs": release.epochs, "batch_size": release.batch, "num_clusters": clusters,
            "unlabel_size": unlabel, "model_dir": model_dir, "norm_dir": norm_dir,
            "model_type": types[0] if len(types) == 1 else default_type}


def same_setting(dest, given, implied):
    """Whether a flag's given value is the release's (folders compared as absolute paths)."""
    if dest in ("model_dir", "norm_dir"):
        return os.path.abspath(given) == os.path.abspath(implied)
    return given == implied


def shown(value):
    """A flag value as it is typed: 30,30,10 for a list."""
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


# --- the three attribute models: prediction_process.py and export_onnx.py ----------------------------
def per_attribute(flag, symbol, minimum):
    """An argparse type: one integer for all three models, or three comma-separated (Act,Dom,Val)."""
    def parse(text):
        parts = text.split(",")
        if len(parts) not in (1, len(EMOTIONS)):
            raise argparse.ArgumentTypeError(f"{flag} takes one {symbol} or three (Act,Dom,Val), "
                                             f"got {text!r}")
        values = [at_least(minimum, flag)(part) for part in parts]
        return values * len(EMOTIONS) if len(values) == 1 else values
    return parse


cluster_counts = per_attribute("-nc", "K", 2)
unlabel_counts = per_attribute("-unlabel", "N", 0)


def add_model_selection(parser, runtime=True):
    """The flags that pick the Act, Dom and Val models of one temporal type: -ep -batch -mt
    --model-dir --norm-dir, -nc and -unlabel (one value, or Act,Dom,Val), --release and,
    with `runtime`, --device and --precision. Returns the defaults to pass to apply_release."""
    add_model_args(parser, one_model=False, runtime=runtime)
    parser.add_argument("-nc", "--num_clusters", type=cluster_counts, default=[DEFAULT_CLUSTERS] * 3,
                        help="clusters K of the models: one K, or Act,Dom,Val (e.g. 30,30,10 for the "
                             "authors' semi-supervised Temp-Trans release); default 10")
    parser.add_argument("-unlabel", "--unlabel_size", type=unlabel_counts, default=[0] * 3,
                        help="unlabelled turns N the models were trained with: one N, or Act,Dom,Val "
                             "(e.g. 100000,100000,15000 for the authors' semi-supervised release); "
                             "default 0")
    return add_release_flag(parser)


def attribute_checkpoints(args):
    """(emotion, K, N, checkpoint path) of the Act, Dom and Val models the flags pick."""
    from model import checkpoint_name

    return [(emo, k, n, os.path.join(args.model_dir, checkpoint_name(args.epochs, args.batch_size, k, emo,
                                                                     args.model_type, n)))
            for emo, k, n in zip(EMOTIONS, args.num_clusters, args.unlabel_size)]
