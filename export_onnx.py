"""Export the three attribute models of one temporal type to ONNX, for ONNX Runtime.

    python export_onnx.py -mt Temp-Triplet --output onnx/                 # ./trained_models
    python export_onnx.py --release v1.8 -mt Temp-CNN --output onnx-cnn/
    python export_onnx.py --release v1.8-ssl --output onnx-ssl/
    python prediction_process.py --onnx onnx-ssl/ --input AUDIO_DIR      # predict with them

The models are picked with prediction_process.py's flags. One file per attribute, named
after its checkpoint (…_Act_Temp-CNN.onnx). Each graph takes one turn's raw mel
spectrogram "mel" (frames, 128) float32, as feat_extract.py writes it, and computes what
prediction_process.py does with it: the NormTerm normalisation, NaN → 0 and clipping to
±3 (method §3); the 11 chunks with step ⌊(T − 62)/10⌋, a turn of 53–61 frames as 11 copies
of the whole turn, a shorter one zero-padded to 62 frames (method §4); the network in
evaluation mode, averaged over the chunks (model.predict_turns); and the de-normalisation.
Outputs: "score" on the training corpus's scale (1–7 in MSP-Podcast) and "embedding", the
256-d turn embedding.
The model's facts (attribute, type, K, N, origin, feature settings, licence, citation)
are in the file's metadata. Beside them, mel_spectrogram.onnx computes "mel" from the 16 kHz
waveform (deepemocluster/onnx_waveform.py), so that the four files need ONNX Runtime alone.
"""
import argparse
import contextlib
import io
import logging
import os
import warnings

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from deepemocluster import releases
from deepemocluster.features import load_norm_term
from model import EMBED_DIM, load_model
from deepemocluster.onnx_runner import (EMBEDDING, FEATURE_SETTINGS, FORMAT, INPUT, OPSET, SCORE, WAVEFORM_FILE,
                         feature_norm_digest)
from deepemocluster.onnx_waveform import waveform_model
from deepemocluster.model_flags import add_model_selection, apply_release, attribute_checkpoints
from utils import (CHUNKS_PER_TURN, CLIP_VALUE, FRAMES_PER_CHUNK, N_MELS,
                   SHORTEST_WHOLE_TURN, UserError, atomic_path, file_sha256, run_cli)

OUTPUT_DIR = "./onnx"
ATTRIBUTE_NAMES = {"Act": "arousal", "Dom": "dominance", "Val": "valence"}
CITATION = ('W.-C. Lin and C. Busso, "Deep temporal clustering features for speech emotion '
            'recognition", Speech Communication 157 (2024) 103027, doi:10.1016/j.specom.2023.103027')
OWN_RUN_LICENCE = ("weights from a training run of this repository (the licence of its training data "
                   "applies); the architecture is W.-C. Lin and C. Busso's, whose code is under the MIT "
                   f"licence, {releases.REPOSITORY_URL}")
FRONT_END_LICENCE = "MIT licence, as this repository's code (the graph holds no model weights)"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default=OUTPUT_DIR,
                   help="folder the three .onnx files and the waveform front end are written "
                        f"into (default {OUTPUT_DIR})")
    defaults = add_model_selection(p, runtime=False)
    return apply_release(p.parse_args(argv), defaults)


# --- the network: model.predict_turns, exported from PyTorch -------------------------------------
class TurnNetwork(torch.nn.Module):
    """model.predict_turns(chunks, embeddings=True) on one turn's (1, 11, L, 128) chunks:
    the mean normalised score over the chunks, (1,), and the turn embedding, (1, 256)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, chunks):
        return self.model.predict_turns(chunks, embeddings=True)


@torch.no_grad()
def export_network(model):
    """The network of `model` as an ONNX program, chunk length L a dynamic axis (53–62: the
    strided convolutions end at 2 × 4 for all of them), exported by torch.export; unoptimised,
    so that the weights of the other attributes' models can be applied to it."""
    chunks = torch.zeros(1, CHUNKS_PER_TURN, FRAMES_PER_CHUNK, N_MELS)
    length = torch.export.Dim("chunk_frames", min=SHORTEST_WHOLE_TURN, max=FRAMES_PER_CHUNK)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)   # no notes on absent torchvision ops
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return torch.onnx.export(TurnNetwork(model.eval()), (chunks,), dynamo=True, optimize=False,
                                 opset_version=OPSET, input_names=["chunks"],
                                 output_names=["normalised_score", "turn_embedding"],
                                 dynamic_shapes={"chunks": {2: length}})


def network_with_weights(program, model):
    """The exported network with `model`'s weights, optimised (constants folded,
    BatchNorm folded into the convolutions) as a ModelProto."""
    import onnxscript

    weights = TurnNetwork(model).state_dict()
    missing = set(program.model.graph.initializers) - set(weights)
    if missing:
        raise RuntimeError(f"exported graph has weights the model lacks: {sorted(missing)[:3]}")
    program.apply_weights({k: v for k, v in weights.items() if k in program.model.graph.initializers})
    return onnxscript.optimizer.optimize(program.model_proto)


# --- method §3–4 and the de-normalisation, as ONNX nodes around the network ------------------------
def constant(name, value, dtype):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def front_end(feature_norm):
    """Nodes and constants from the raw mel spectrogram "mel" (T, 128) to the network's
    "chunks" (1, 11, L, 128), as features.FeatureNorm.apply and chunk_turn(whole_short_turns=True)."""
    consts = [constant("feat_mean", feature_norm.mean, np.float64),
              constant("feat_std", feature_norm.std, np.float64),
              constant("zero_f64", 0.0, np.float64), constant("clip_low", -CLIP_VALUE, np.float64),
              constant("clip_high", CLIP_VALUE, np.float64),
              constant("zero", 0, np.int64), constant("one", 1, np.int64), constant("axis0", [0], np.int64),
              constant("no_pad_start", [0], np.int64),
              constant("shortest_whole_turn", SHORTEST_WHOLE_TURN, np.int64),
              constant("chunk_frames", FRAMES_PER_CHUNK, np.int64),
              constant("chunk_gaps", CHUNKS_PER_TURN - 1, np.int64),
              constant("chunk_numbers", np.arange(CHUNKS_PER_TURN)[:, None], np.int64)]
    n = helper.make_node
    nodes = [
        # method §3: (x − mean) / std in float64, NaN → 0, clipped to ±3 (±inf too), float32.
        n("Cast", [INPUT], ["mel_f64"], to=TensorProto.DOUBLE),
        n("Sub", ["mel_f64", "feat_mean"], ["centred"]),
        n("Div", ["centred", "feat_std"], ["scaled"]),
        n("IsNaN", ["scaled"], ["is_nan"]),
        n("Where", ["is_nan", "zero_f64", "scaled"], ["finite_or_inf"]),
        n("Clip", ["finite_or_inf", "clip_low", "clip_high"], ["clipped"]),
        n("Cast", ["clipped"], ["normalised"], to=TensorProto.FLOAT),
        # method §4: a turn of T < 53 frames is padded with zeros to P = 62, others kept (P = T).
        n("Shape", [INPUT], ["mel_frames"], end=1),
        n("Squeeze", ["mel_frames"], ["frames"]),
        n("Less", ["frames", "shortest_whole_turn"], ["too_short"]),
        n("Where", ["too_short", "chunk_frames", "frames"], ["padded_frames"]),
        n("Sub", ["padded_frames", "frames"], ["pad_frames"]),
        n("Unsqueeze", ["pad_frames", "axis0"], ["pad_end"]),
        n("Concat", ["no_pad_start", "pad_end"], ["pads"], axis=0),
        n("Pad", ["normalised", "pads", "", "axis0"], ["padded"]),
        # Chunk i is frames [i·step, i·step + L): L = min(P, 62), step = ⌊max(P − 62, 0) / 10⌋,
        # so a turn of 53–61 frames gives 11 copies of the whole turn.
        n("Min", ["padded_frames", "chunk_frames"], ["chunk_length"]),
        n("Sub", ["padded_frames", "chunk_frames"], ["spare_frames"]),
        n("Max", ["spare_frames", "zero"], ["spare_or_zero"]),
        n("Div", ["spare_or_zero", "chunk_gaps"], ["step"]),
        n("Mul", ["chunk_numbers", "step"], ["chunk_starts"]),
        n("Range", ["zero", "chunk_length", "one"], ["chunk_offsets"]),
        n("Add", ["chunk_starts", "chunk_offsets"], ["frame_index"]),
        n("Gather", ["padded", "frame_index"], ["turn_chunks"], axis=0),
        n("Unsqueeze", ["turn_chunks", "axis0"], ["chunks"]),
    ]
    return nodes, consts


def back_end(label_mean, label_std):
    """Nodes from the network's outputs to "score" (label scale, a scalar) and "embedding" (256,)."""
    consts = [constant("label_std", label_std, np.float32), constant("label_mean", label_mean, np.float32),
              constant("batch_axis", [0], np.int64)]
    n = helper.make_node
    nodes = [n("Mul", ["normalised_score", "label_std"], ["scaled_score"]),
             n("Add", ["scaled_score", "label_mean"], ["turn_score"]),
             n("Squeeze", ["turn_score", "batch_axis"], [SCORE]),
             n("Squeeze", ["turn_embedding", "batch_axis"], [EMBEDDING])]
    return nodes, consts


def in_scope(scope, nodes, consts):
    """Prefix every name but the interface ones (the graph's and the network's inputs and
    outputs) with `scope/`, so that none can clash with a name inside the network."""
    interface = {INPUT, SCORE, EMBEDDING, "chunks", "normalised_score", "turn_embedding", ""}

    def scoped(name):
        return name if name in interface else f"{scope}/{name}"
    for i, node in enumerate(nodes):
        node.input[:] = [scoped(n) for n in node.input]
        node.output[:] = [scoped(n) for n in node.output]
        node.name = f"{scope}/{i}_{node.op_type}"
    for const in consts:
        const.name = scoped(const.name)
    return nodes, consts


def turn_model(network, norm, emotion, metadata):
    """The whole graph: front end, network, back end, with the metadata and a doc string."""
    front, front_consts = in_scope("front_end", *front_end(norm["features"]))
    back, back_consts = in_scope("back_end", *back_end(norm[f"{emotion}_mean"], norm[f"{emotion}_std"]))
    net = network.graph
    graph = helper.make_graph(
        front + list(net.node) + back, metadata["checkpoint"],
        inputs=[helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["frames", N_MELS])],
        outputs=[helper.make_tensor_value_info(SCORE, TensorProto.FLOAT, []),
                 helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, [EMBED_DIM])],
        initializer=front_consts + list(net.initializer) + back_consts, value_info=list(net.value_info))
    proto = helper.make_model(graph, opset_imports=list(network.opset_import), ir_version=network.ir_version,
                              producer_name="export_onnx.py", producer_version=torch.__version__,
                              doc_string=doc_string(metadata))
    proto.functions.extend(network.functions)
    helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def doc_string(meta):
    return (f"{meta['attribute_name'].capitalize()} ({meta['attribute']}) of one speaking turn, "
            f"{meta['temporal_type']} model. Input {INPUT}: (frames, {N_MELS}) float32 mel power "
            f"spectrogram of 16 kHz audio ({FEATURE_SETTINGS['stft']}; see the metadata). Outputs "
            f"{SCORE}: the attribute on the training corpus's rating scale (1-7 in MSP-Podcast); {EMBEDDING}: the {EMBED_DIM}-d turn "
            "embedding (deep temporal clustering feature).")


# --- metadata -------------------------------------------------------------------------------------------
def model_metadata(args, emotion, clusters, unlabel, checkpoint, norm):
    """metadata_props of one file: which model, where from, which features, whose, how to cite."""
    meta = {"format": FORMAT, "attribute": emotion, "attribute_name": ATTRIBUTE_NAMES[emotion],
            "temporal_type": args.model_type, "clusters": str(clusters), "unlabelled_turns": str(unlabel),
            "epochs": str(args.epochs), "batch": str(args.batch_size),
            "checkpoint": os.path.basename(checkpoint), "checkpoint_sha256": file_sha256(checkpoint),
            **FEATURE_SETTINGS,
            "feature_norm_sha256": feature_norm_digest(norm["features"]),
            "label_mean": repr(norm[f"{emotion}_mean"]), "label_std": repr(norm[f"{emotion}_std"]),
            "citation": CITATION}
    if args.release:
        release = releases.RELEASES[args.release]
        meta.update(release=release.name, release_commit=release.commit,
                    source=f"{releases.REPOSITORY_URL} at commit {release.commit}",
                    licence=releases.LICENCE)
    else:
        meta.update(source="a training run of this repository (main.py)", licence=OWN_RUN_LICENCE)
    return meta


# --- the export -------------------------------------------------------------------------------------------
def onnx_name(checkpoint):
    """…_Act_Temp-CNN.pth.tar → …_Act_Temp-CNN.onnx"""
    return os.path.basename(checkpoint).removesuffix(".pth.tar") + ".onnx"


def prepare_output(folder):
    """Create the output folder; one that cannot be written is a UserError before any export."""
    try:
        os.makedirs(folder, exist_ok=True)
        with atomic_path(os.path.join(folder, ".write_check")) as tmp:
            open(tmp, "w").close()
        os.remove(os.path.join(folder, ".write_check"))
    except OSError as err:
        raise UserError(f"cannot write to --output {folder}: {err.strerror or err}") from None


def load_models(args):
    """The NormTerm and (emotion, K, N, checkpoint, model) of the three models the flags pick."""
    norm = load_norm_term(args.norm_dir)
    return norm, [(emo, k, n, path, load_model(path, args.model_type, k))
                  for emo, k, n, path in attribute_checkpoints(args)]


def export_models(args, norm, picked):
    """{file name: ModelProto} of the three models: one export of the network, whose weights
    are then those of each attribute's model in turn."""
    program = export_network(picked[0][-1])
    return {onnx_name(path): turn_model(network_with_weights(program, model), norm, emo,
                                        model_metadata(args, emo, k, n, path, norm))
            for emo, k, n, path, model in picked}


def export_waveform_front_end():
    """{mel_spectrogram.onnx: ModelProto}: the feature front end, the same for every model."""
    return {WAVEFORM_FILE: waveform_model({"licence": FRONT_END_LICENCE, "citation": CITATION})}


def write_models(folder, protos):
    """Each file written to a temporary name, then renamed into place."""
    for name, proto in protos.items():
        try:
            with atomic_path(os.path.join(folder, name)) as tmp:
                onnx.save(proto, tmp)
        except OSError as err:
            raise UserError(f"cannot write {os.path.join(folder, name)}: {err.strerror or err}") from None


def main(argv=None):
    args = parse_args(argv)
    norm, picked = load_models(args)
    prepare_output(args.output)
    protos = {**export_models(args, norm, picked), **export_waveform_front_end()}
    write_models(args.output, protos)
    source = f"release {args.release}" if args.release else args.model_dir
    print(f"{len(picked)} {args.model_type} model(s) of {source} exported to {args.output}, with "
          f"the waveform front end {WAVEFORM_FILE}:")
    for name in protos:
        print(f"  {name}")
    print(f"predict with: .venv/bin/python prediction_process.py --onnx {args.output} --input AUDIO_DIR")
    if args.release:
        print(releases.LICENCE)
    return 0


if __name__ == "__main__":
    run_cli(main)
