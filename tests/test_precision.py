"""The fast path (channels-last, bf16 autocast) against the original fp32 numerics."""
import numpy as np
import pytest
import torch

from model import build_model, predict_batch, prepare_for_inference
from deepemocluster.compute import (Settings, backends_restored, configure_backends, configured_backends,
                                    use_bf16, use_channels_last)
from utils import TEMPORAL_TYPES

CPU = torch.device("cpu")
FP32, BF16 = Settings(CPU), Settings(CPU, "bf16", bf16=True)


def spread_model(mt, seed=0):
    """A model whose outputs vary visibly between turns (Linear std 0.05, not 0.01)."""
    torch.manual_seed(seed)
    model = build_model(mt, 10)
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            m.weight.data.normal_(0, 0.05)
        elif isinstance(m, torch.nn.BatchNorm2d):  # trained-looking statistics, so folding them is tested
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def turns(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 11, 62, 128, generator=g).clamp_(-3, 3)


def test_precision_flag_semantics():
    assert use_bf16("fp32", CPU) is False and use_bf16("fp32", CPU, training=False) is False
    assert use_bf16("bf16", CPU) is True and use_bf16("bf16", CPU, training=False) is True
    # auto: inference keeps fp32 so released checkpoints match the authors' numbers.
    assert use_bf16("auto", CPU, training=False) is False
    assert use_bf16("auto", CPU) == bool(torch.cpu._is_avx512_bf16_supported()
                                         or torch.cpu._is_amx_tile_supported())
    assert use_channels_last("auto") and use_channels_last("bf16") and not use_channels_last("fp32")


def test_auto_precision_on_cuda_needs_native_bf16_on_the_runs_gpu(monkeypatch):
    """bf16 from compute capability 8.0 (T4 7.5 and V100 7.0 emulate it: fp32 there), read from
    the run's GPU; torch.cuda.is_bf16_supported() (emulation included) is not what decides."""
    asked, capability = [], {}

    def get_device_capability(device=None):
        asked.append(device)
        return capability["now"]

    monkeypatch.setattr(torch.cuda, "get_device_capability", get_device_capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    gpu = torch.device("cuda", 1)
    for capability["now"], want in (((7, 0), False), ((7, 5), False), ((8, 0), True), ((8, 9), True),
                                    ((9, 0), True)):
        assert use_bf16("auto", gpu) is want, capability["now"]
    assert asked == [gpu] * 5
    assert use_bf16("auto", gpu, training=False) is False
    assert use_bf16("bf16", gpu) is True and use_bf16("fp32", gpu) is False
    assert len(asked) == 5            # inference and an explicit precision ask nothing


def tf32_flags():
    """cuDNN's and cuBLAS's TF32 switches, through both of torch's APIs, and cuDNN autotuning."""
    b = torch.backends
    return {"cudnn.allow_tf32": b.cudnn.allow_tf32, "cuda.matmul.allow_tf32": b.cuda.matmul.allow_tf32,
            "cudnn.conv": b.cudnn.conv.fp32_precision, "cudnn.rnn": b.cudnn.rnn.fp32_precision,
            "cuda.matmul": b.cuda.matmul.fp32_precision, "cudnn.benchmark": b.cudnn.benchmark}


@pytest.fixture
def tf32_on():
    """The TF32 switches on (cuDNN's default; cuBLAS's as a user may have set it); torch's
    flags as they were after the test."""
    b = torch.backends
    saved = (b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32, b.cudnn.benchmark)
    b.cudnn.allow_tf32 = b.cuda.matmul.allow_tf32 = True
    yield
    b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32, b.cudnn.benchmark = saved


def test_configure_backends_keeps_tf32_off_on_cuda_whatever_the_precision(tf32_on):
    """bf16 training too: the layers kept in fp32 on purpose must not run in TF32."""
    before = tf32_flags()
    configure_backends(CPU)
    assert tf32_flags() == before                   # a CPU run leaves the CUDA flags alone
    configure_backends(torch.device("cuda", 0))
    assert tf32_flags() == {"cudnn.allow_tf32": False, "cuda.matmul.allow_tf32": False, "cudnn.conv": "none",
                            "cudnn.rnn": "none", "cuda.matmul": "ieee", "cudnn.benchmark": True}


@pytest.mark.parametrize("mt", TEMPORAL_TYPES)
def test_folded_channels_last_fp32_matches_nchw_to_float_precision(mt):
    x = turns()
    ref = predict_batch([spread_model(mt)], x, FP32)[0]
    fast = prepare_for_inference(spread_model(mt), CPU, fast=True)
    assert fast.cnn_features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.cnn_features)  # folded
    got = predict_batch([fast], x, FP32)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("mt", TEMPORAL_TYPES)
def test_bf16_fast_path_matches_fp32_within_bf16_tolerance(mt):
    x = turns(8)
    ref = predict_batch([spread_model(mt)], x, FP32)[0]
    fast = prepare_for_inference(spread_model(mt), CPU, fast=True)
    got = predict_batch([fast], x, BF16)[0]
    scale = np.abs(ref).max()
    assert scale > 0
    # bf16 keeps 8 significant bits; through ~12 layers that is a few per cent.
    assert np.max(np.abs(got - ref)) <= 0.1 * scale
    assert not np.array_equal(got, ref)  # the bf16 path really ran
    with torch.no_grad():
        emb_ref = spread_model(mt).embed_chunks(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            emb_fast = fast.embed_chunks(x).float()
    assert torch.linalg.norm(emb_fast - emb_ref) <= 0.03 * torch.linalg.norm(emb_ref)


def test_predict_batch_runs_each_model_on_the_same_turns():
    x = turns(4)
    models = [spread_model("Temp-Triplet", seed=s) for s in (0, 1, 2)]
    together = predict_batch(models, x, FP32)
    alone = [predict_batch([m], x[i:i + 1], FP32)[0] for m in models for i in range(4)]
    np.testing.assert_allclose(np.concatenate(together), np.concatenate(alone), rtol=1e-5, atol=1e-7)


def test_fold_batchnorm_keeps_fp32_path_and_checkpoint_unchanged():
    model = spread_model("Temp-GRU")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = prepare_for_inference(model, CPU, fast=False)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.cnn_features) == 7
    after = plain.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("mt", TEMPORAL_TYPES)
def test_bf16_autocast_covers_only_the_convolutions(mt):
    model = spread_model(mt).train()
    x = turns(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        conv = model.cnn_features(x.reshape(-1, 1, 62, 128))
        cluster, attri, emb = model(x)
    assert conv.dtype == torch.bfloat16
    # cnn_out, the temporal model and both heads run in fp32: their outputs and gradients.
    assert cluster.dtype == attri.dtype == emb.dtype == torch.float32
    (attri.sum() + cluster.sum()).backward()
    assert model.top_layer_attri.weight.grad.dtype == torch.float32


def every_backend_flag():
    """What torch shows of the flags configure_backends sets, through both of its APIs ('refused'
    where torch will not read a legacy flag: it was set through the new API)."""
    def shown(read):
        try:
            return read()
        except RuntimeError:
            return "refused"
    b = torch.backends
    return {"cudnn.benchmark": b.cudnn.benchmark, "cudnn.allow_tf32": shown(lambda: b.cudnn.allow_tf32),
            "cuda.matmul.allow_tf32": shown(lambda: b.cuda.matmul.allow_tf32),
            "float32_matmul_precision": shown(torch.get_float32_matmul_precision),
            "cudnn": b.cudnn.fp32_precision, "cudnn.conv": b.cudnn.conv.fp32_precision,
            "cudnn.rnn": b.cudnn.rnn.fp32_precision, "cuda.matmul": b.cuda.matmul.fp32_precision}


def legacy_switches():
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = False, True


def new_api_strings():
    b = torch.backends
    b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision = "tf32", "ieee", "tf32"


@pytest.mark.parametrize("users_flags", [lambda: None, legacy_switches, new_api_strings,
                                         lambda: torch.set_float32_matmul_precision("medium")],
                         ids=["torch defaults", "legacy switches", "new API, mixed", "matmul precision"])
def test_configured_backends_apply_to_the_block_alone(users_flags):
    """A Predictor's scope (deepemocluster/predictor.py): inside, TF32 off and cuDNN autotuning;
    after, the user's flags exactly as they were, however they were set."""
    with backends_restored():                       # torch's flags for the other tests
        users_flags()
        before = every_backend_flag()
        with configured_backends(torch.device("cuda", 0)):
            inside = every_backend_flag()
        assert every_backend_flag() == before
    assert inside["cudnn.benchmark"] is True and inside["cudnn.allow_tf32"] is False
    assert "tf32" not in (inside["cudnn.conv"], inside["cudnn.rnn"], inside["cuda.matmul"])
