"""prediction_process.py's flags, parsed and checked: the command line and the Predictor (which
takes them as keyword arguments) accept and refuse the same settings."""
import argparse
import math

from deepemocluster.features import AUDIO_EXTENSIONS
from deepemocluster.model_flags import RELEASE_FLAGS, add_model_selection, apply_release
from deepemocluster.time_windows import CHUNK_SECONDS
from utils import FRAMES_PER_CHUNK


def parse_args(argv=None, description=None, input_dir=None, output_csv=None):
    """The flags of `argv`, with the folder and CSV the command defaults to."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", default=input_dir,
                   help=f"folder searched recursively for audio files ({', '.join(AUDIO_EXTENSIONS)})")
    p.add_argument("--output", default=output_csv, help="the CSV to write")
    defaults = add_model_selection(p)
    p.add_argument("--workers", type=int, default=1, help="feature-extraction processes")
    p.add_argument("--window", type=seconds("--window"), metavar="SECONDS",
                   help="predict each window of SECONDS (at least one chunk, "
                        f"{CHUNK_SECONDS:g} s) of every file as one turn: one row per window")
    p.add_argument("--hop", type=seconds("--hop"), metavar="SECONDS",
                   help="seconds between window starts (default: the window, no overlap)")
    p.add_argument("--turns", metavar="vad|FILE",
                   help="predict each speaking turn as one turn: one row per turn (File_Name, Start, "
                        "End exact to the sample). `vad`: the turns a voice activity detector (Silero "
                        "VAD) finds, cut at pauses into turns of at most 11 s as MSP-Podcast's were; "
                        "FILE: the turns of a CSV (File_Name, Start, End[, Speaker]) or an RTTM file "
                        "(with speakers, the output gets a Speaker column)")
    p.add_argument("--plot", metavar="DIR",
                   help="with --window or --turns: one PNG per file of the three attributes over time")
    p.add_argument("--embeddings", metavar="DIR",
                   help="also write each row's 256-d turn embedding of each attribute model: "
                        "DIR/embeddings_{Act,Dom,Val}.npy and DIR/index.csv")
    p.add_argument("--onnx", metavar="DIR",
                   help="predict with the three models export_onnx.py wrote into DIR, through ONNX "
                        "Runtime's CPU provider instead of PyTorch (models, settings and NormTerm "
                        "come from the files)")
    args = p.parse_args(argv)
    if args.onnx is not None:
        check_onnx_flags(p, args)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    if args.window is not None and args.window < CHUNK_SECONDS:
        p.error(f"--window must be at least one chunk ({FRAMES_PER_CHUNK} frames, {CHUNK_SECONDS:g} s), "
                f"got {args.window:g}")
    if args.window is not None and args.turns is not None:
        p.error("--window and --turns exclude each other: fixed windows, or speaking turns")
    if args.window is None:
        if args.hop is not None:
            p.error("--hop needs --window")
        if args.plot is not None and args.turns is None:
            p.error("--plot needs --window or --turns")
    elif args.hop is None:
        args.hop = args.window
    return apply_release(args, defaults)


def check_onnx_flags(parser, args):
    """--onnx takes everything from its files and runs on the CPU in fp32: flags that would
    pick other models, another device or bf16 are refused."""
    given = [flag for dest, flag in RELEASE_FLAGS.items() if getattr(args, dest) is not None]
    given += ["--release"] if args.release else []
    if given:
        parser.error(f"--onnx takes the models, their settings and NormTerm from its files: "
                     f"leave out {', '.join(given)}")
    if args.device not in ("auto", "cpu") or args.precision == "bf16":
        parser.error("--onnx runs on ONNX Runtime's CPU provider in fp32: leave out --device and "
                     "--precision")


def seconds(flag):
    """An argparse type: a finite number of seconds greater than 0."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{flag} must be a number of seconds greater than 0, "
                                             f"got {text!r}")
        return value
    return parse
