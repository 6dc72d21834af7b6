"""Prediction with exported ONNX models through ONNX Runtime (prediction_process.py --onnx DIR).

export_onnx.py writes one file per attribute. Each takes one turn's raw mel spectrogram
"mel" (frames, 128) float32, as feat_extract.py writes it, and gives "score" (the attribute
on the training corpus's scale, 1–7 in MSP-Podcast) and "embedding" (the 256-d turn
embedding). The feature normalisation, chunking, network and de-normalisation are all inside
the graph; the files' metadata say which model each one is. No torch is imported here.
"""
import hashlib
import os

import numpy as np

from utils import EMOTIONS, HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE, UserError

INPUT = "mel"
SCORE = "score"
EMBEDDING = "embedding"
FORMAT = "temporal-deepemocluster-turn/1"
# The lowest opset the torch.export-based exporter writes (its operator library is opset 18),
# and the IR version it writes, for the waveform front end too.
OPSET = 18
IR_VERSION = 10
# The waveform front end export_onnx.py writes beside them (onnx_waveform.py): "waveform" in,
# "mel" out, so that the three files and it need ONNX Runtime alone.
WAVEFORM = "waveform"
WAVEFORM_FORMAT = "temporal-deepemocluster-mel/1"
WAVEFORM_FILE = "mel_spectrogram.onnx"
TELEMETRY_SWITCH = "ORT_DISABLE_TELEMETRY"

# The front end the graphs expect (features.mel_spectrogram), written into every file.
FEATURE_SETTINGS = {
    "sample_rate": str(SAMPLE_RATE),
    "peak_normalisation": "waveform divided by its peak absolute amplitude",
    "stft": f"n_fft {N_FFT}, hop {HOP_LENGTH}, Hann window, centred frames, reflect padding",
    "mel_filters": f"{N_MELS} Slaney-scale bands, Slaney area normalisation, 0 Hz to {SAMPLE_RATE // 2} Hz",
    "mel_values": "power (|STFT|^2) through the filters, no log",
}
# What the three attribute files of one folder must agree on.
SHARED_KEYS = ("format", "temporal_type", "epochs", "batch", "release", "release_commit",
               "feature_norm_sha256", *FEATURE_SETTINGS)


def feature_norm_digest(feature_norm):
    """sha256 of the feature NormTerm (features.FeatureNorm: mean and std as float64): one
    NormTerm, one digest."""
    digest = hashlib.sha256()
    for values in (feature_norm.mean, feature_norm.std):
        digest.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return digest.hexdigest()


def onnx_runtime():
    """The onnxruntime module, imported with its telemetry off: on Linux (seen with 1.32),
    importing it looks up Microsoft's event collector (mobile.events.data.microsoft.com) and
    writes a session file into the temporary folder, unless ORT_DISABLE_TELEMETRY is set."""
    os.environ.setdefault(TELEMETRY_SWITCH, "1")
    import onnxruntime

    return onnxruntime


def session_options(threads=None):
    """ONNX Runtime's session options, set as its thread-management guide describes for the
    CPU provider: every graph optimisation; operators in sequence (the graph has no parallel
    branches); intra-operator threads = the cores this process may use; and no spinning of
    idle threads, since the three sessions run one after another and an idle session's
    spinning threads would take the cores from the one running."""
    ort = onnx_runtime()

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_session(path, options=None):
    """An ONNX Runtime CPU session of one file; a file it cannot load is a UserError."""
    ort = onnx_runtime()

    try:
        return ort.InferenceSession(path, options or session_options(),
                                    providers=["CPUExecutionProvider"])
    except Exception as err:   # ORT raises its own exception types for damaged or foreign files
        detail = (str(err).strip().splitlines() or ["no detail"])[0]
        raise UserError(f"cannot load {path} with ONNX Runtime: {detail}")


class OnnxModels:
    """The Act, Dom and Val models exported into one folder, run with ONNX Runtime."""

    def __init__(self, folder, threads=None):
        if not os.path.isdir(folder):
            raise UserError(f"--onnx {folder}: no such folder")
        files = sorted(f for f in os.listdir(folder) if f.endswith(".onnx"))
        options = session_options(threads)
        found = {}
        for name in files:
            session = open_session(os.path.join(folder, name), options)
            meta = session.get_modelmeta().custom_metadata_map
            if meta.get("format") == WAVEFORM_FORMAT:
                continue
            if meta.get("format") != FORMAT:
                raise UserError(f"{os.path.join(folder, name)} was not written by export_onnx.py "
                                f"(its metadata has no format {FORMAT!r})")
            found.setdefault(meta.get("attribute"), []).append((name, session, meta))
        for emo in EMOTIONS:
            if emo not in found:
                raise UserError(f"--onnx {folder} has no {emo} model (found: {', '.join(files) or 'no .onnx file'}); "
                                "export all three with export_onnx.py --output " + folder)
            if len(found[emo]) > 1:
                raise UserError(f"--onnx {folder} has {len(found[emo])} {emo} models "
                                f"({', '.join(n for n, _, _ in found[emo])}): export each set of "
                                "models into its own folder")
        self.folder = folder
        self.names = [found[emo][0][0] for emo in EMOTIONS]
        self.sessions = [found[emo][0][1] for emo in EMOTIONS]
        self.metadata = [found[emo][0][2] for emo in EMOTIONS]
        check_agreement(folder, self.names, self.metadata)

    @property
    def temporal_type(self):
        return self.metadata[0]["temporal_type"]

    @property
    def source(self):
        """Where the models came from: the release, or the folder of exported files."""
        release = self.metadata[0].get("release")
        return f"release {release}, ONNX Runtime" if release else f"{self.folder}, ONNX Runtime"

    @property
    def norm(self):
        """Each attribute's label mean and std (NormTerm's keys) that the files de-normalise with."""
        return {f"{emo}_{stat}": float(meta[f"label_{stat}"])
                for emo, meta in zip(EMOTIONS, self.metadata) for stat in ("mean", "std")}

    def predict(self, feats, embeddings=False):
        """Each model's scores on the label scale (models × turns) for a list of raw
        (frames, 128) turns and, with `embeddings`, the turn embeddings (models × turns × 256)."""
        outputs = [SCORE, EMBEDDING] if embeddings else [SCORE]
        scores = np.empty((len(self.sessions), len(feats)), np.float32)
        size = {o.name: o.shape for o in self.sessions[0].get_outputs()}[EMBEDDING][-1]
        vectors = np.empty((len(self.sessions), len(feats), size), np.float32) if embeddings else None
        for j, feat in enumerate(feats):
            mel = np.ascontiguousarray(feat, dtype=np.float32)
            for m, session in enumerate(self.sessions):
                out = session.run(outputs, {INPUT: mel})
                scores[m, j] = out[0]
                if embeddings:
                    vectors[m, j] = out[1]
        return scores, vectors


def check_agreement(folder, names, metadata):
    """The three files must be one set (same temporal type, release, NormTerm...), and
    expect the features this project extracts."""
    for key in SHARED_KEYS:
        values = [meta.get(key) for meta in metadata]
        if len(set(values)) > 1:
            listed = ", ".join(f"{n}: {v!r}" for n, v in zip(names, values))
            raise UserError(f"the ONNX models in {folder} disagree on {key} ({listed}): "
                            "export the three attribute models together with export_onnx.py")
    for key, value in FEATURE_SETTINGS.items():
        if metadata[0].get(key) != value:
            raise UserError(f"the ONNX models in {folder} expect features with {key} "
                            f"{metadata[0].get(key)!r}; this project's feature extraction has {value!r}")
