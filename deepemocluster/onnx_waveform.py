"""The feature front end (method §3) as an ONNX graph, so that a deployer needs ONNX Runtime
alone: the 16 kHz waveform in, the mel spectrogram the exported models take out, equal to
features.mel_spectrogram (feat_extract.py) to float rounding.

Input "waveform": (samples,) float32, 16 kHz mono, at least 257 samples (the reflect padding
of the centred first frame needs them). Output "mel": (samples // 256 + 1, 128) float32.
Inside, as features.mel_spectrogram computes it: the division by the peak absolute amplitude
(float32); the centred frames (256 samples of reflect padding at each end); the periodic
Hann window and the one-sided 512-point STFT in float64, as librosa computes it before it
rounds to complex64; the power; the 128 Slaney mel filters, a constant.

The padding is librosa's (0.10 and 0.11, checked with 0.11.0; tests/test_onnx_waveform.py
compares the two), which pads the head and the tail of the signal apart:
where the length n is a multiple of 256 (and at least 512), the tail it pads has only 256
samples, and the last padded sample is y[n − 255], where a reflection of the whole signal
has y[n − 257]. Silent audio (a zero peak) gives NaN, which the turn graphs read as 0:
feat_extract.py refuses such a file, so a caller should check for silence first.
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deepemocluster.features import mel_filterbank
from deepemocluster.onnx_runner import FEATURE_SETTINGS, INPUT, IR_VERSION, OPSET, WAVEFORM, WAVEFORM_FORMAT
from utils import HOP_LENGTH, N_FFT, N_MELS

CENTRE_PAD = N_FFT // 2      # samples of reflect padding before the first and after the last frame


def hann_window():
    """The periodic Hann window of librosa's window="hann" (scipy's get_window, fftbins=True)."""
    n = np.arange(N_FFT, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)


def mel_nodes():
    """Nodes and constants from "waveform" (samples,) to "mel" (frames, 128)."""
    assert N_FFT == 2 * HOP_LENGTH, "librosa's tail padding below is that of n_fft = 2 hops"
    c = numpy_helper.from_array
    consts = [c(np.array([CENTRE_PAD, CENTRE_PAD], np.int64), "centre_pads"),
              c(np.array([0], np.int64), "zero"), c(np.array([-1], np.int64), "last"),
              c(np.array([np.iinfo(np.int64).max], np.int64), "end"),
              c(np.array([HOP_LENGTH], np.int64), "hop"),
              c(np.array([N_FFT], np.int64), "n_fft_1d"),
              c(np.array([CENTRE_PAD - 1], np.int64), "tail_offset"),
              c(np.array([0, 2], np.int64), "batch_and_channel_axes"),
              c(np.array(HOP_LENGTH, np.int64), "hop_length"),
              c(np.array(N_FFT, np.int64), "n_fft"),
              c(hann_window(), "hann_window"),
              c(np.array([-1], np.int64), "real_imaginary_axis"),
              c(np.array([0], np.int64), "batch_axis"),
              c(mel_filterbank().T.astype(np.float64), "mel_filters")]
    n = helper.make_node
    nodes = [
        n("Abs", [WAVEFORM], ["magnitude"]),
        n("ReduceMax", ["magnitude"], ["peak"], keepdims=0),
        n("Div", [WAVEFORM, "peak"], ["peak_normalised"]),
        n("Cast", ["peak_normalised"], ["samples_f64"], to=TensorProto.DOUBLE),
        n("Pad", ["samples_f64", "centre_pads"], ["reflected"], mode="reflect"),
        # librosa's tail: with n ≥ n_fft it pads the last n − (n // hop − 1)·hop samples on
        # their own; for n a multiple of the hop (n_fft = 2 hops) they are one fewer than the
        # padding, and the last padded sample is y[n − 255] (n − CENTRE_PAD + 1).
        n("Shape", [WAVEFORM], ["sample_count"]),
        n("Mod", ["sample_count", "hop"], ["remainder"]),
        n("Equal", ["remainder", "zero"], ["whole_hops"]),
        n("GreaterOrEqual", ["sample_count", "n_fft_1d"], ["two_parts"]),
        n("And", ["whole_hops", "two_parts"], ["short_tail"]),
        n("Sub", ["sample_count", "tail_offset"], ["tail_index"]),
        n("Max", ["tail_index", "zero"], ["tail_index_or_zero"]),
        n("Gather", ["samples_f64", "tail_index_or_zero"], ["tail_sample"], axis=0),
        n("Slice", ["reflected", "zero", "last", "zero"], ["all_but_last"]),
        n("Slice", ["reflected", "last", "end", "zero"], ["reflected_last"]),
        n("Where", ["short_tail", "tail_sample", "reflected_last"], ["last_sample"]),
        n("Concat", ["all_but_last", "last_sample"], ["centred"], axis=0),
        n("Unsqueeze", ["centred", "batch_and_channel_axes"], ["signal"]),
        n("STFT", ["signal", "hop_length", "hann_window", "n_fft"], ["spectrum"], onesided=1),
        n("Mul", ["spectrum", "spectrum"], ["squares"]),
        n("ReduceSum", ["squares", "real_imaginary_axis"], ["power_batch"], keepdims=0),
        n("Squeeze", ["power_batch", "batch_axis"], ["power"]),
        n("MatMul", ["power", "mel_filters"], ["mel_f64"]),
        n("Cast", ["mel_f64"], [INPUT], to=TensorProto.FLOAT),
    ]
    return nodes, consts


def waveform_model(metadata):
    """The front end as a checked ModelProto, with `metadata` (and the feature settings) as its
    metadata_props."""
    nodes, consts = mel_nodes()
    for i, node in enumerate(nodes):
        node.name = f"mel_spectrogram/{i}_{node.op_type}"
    graph = helper.make_graph(
        nodes, "mel_spectrogram",
        inputs=[helper.make_tensor_value_info(WAVEFORM, TensorProto.FLOAT, ["samples"])],
        outputs=[helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["frames", N_MELS])],
        initializer=consts)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="export_onnx.py",
                              doc_string=("The mel spectrogram the turn models of this folder take "
                                          f"({INPUT}: (frames, {N_MELS}) float32) from 16 kHz mono "
                                          f"audio ({WAVEFORM}: (samples,) float32, at least "
                                          f"{CENTRE_PAD + 1} samples); see the metadata."))
    helper.set_model_props(proto, {"format": WAVEFORM_FORMAT, **FEATURE_SETTINGS, **metadata})
    onnx.checker.check_model(proto, full_check=True)
    return proto
