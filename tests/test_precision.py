"""Numeric precision: resolution of ``auto``, bad requests, and that bf16 really runs the network in bfloat16."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from autocmr.errors import ConfigurationError
from autocmr.inference.sliding_window import predict_logits
from autocmr.precision import autocast, cpu_has_fast_bf16, fast_precision, resolve_precision
from autocmr.trainers.options import TrainOptions

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU


@pytest.mark.parametrize("native_bf16", [True, False])
def test_auto_is_float32_except_cuda_training_and_prediction_on_a_bf16_cpu(monkeypatch, native_bf16):
    import autocmr.precision as precision

    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: native_bf16)
    assert resolve_precision("auto", CPU, training=True) == "fp32"  # training: only when asked
    assert resolve_precision(None, CPU, training=False) == ("bf16" if native_bf16 else "fp32")
    assert resolve_precision("auto", CUDA, training=True) == "fp16"
    assert resolve_precision("auto", CUDA, training=False) == "fp32"
    assert resolve_precision("BF16", CPU, training=True) == "bf16"


@pytest.mark.parametrize("amx, vendor, avx512_bf16, fast", [
    (True, "GenuineIntel", True, True),  # AMX: 1.5x in training
    (False, "GenuineIntel", True, False),  # AVX512-BF16 on a Xeon without AMX: 0.8x
    (False, "AuthenticAMD", True, True),  # AVX512-BF16 on an AMD EPYC: prediction 1.4x
    (False, "AuthenticAMD", False, False),  # emulated
    (False, "", True, False)])  # no /proc/cpuinfo to tell the vendor
def test_fast_bf16_is_what_was_measured_fast_not_what_is_supported(monkeypatch, amx, vendor, avx512_bf16, fast):
    import autocmr.precision as precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    flags = frozenset({"avx512_bf16"} if avx512_bf16 else ())
    monkeypatch.setattr(precision, "cpu_info", lambda: precision.CpuInfo(vendor, "", flags))
    assert cpu_has_fast_bf16() is fast


def test_cpu_info_reads_the_first_processor_entry(tmp_path):
    from autocmr.precision import cpu_info

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n"
                    "flags\t\t: fpu avx512_bf16 amx_tile\n\nprocessor\t: 1\nvendor_id\t: Other\nflags : amx_bf16\n")
    cpu = cpu_info(str(info))
    assert (cpu.vendor, cpu.model) == ("AuthenticAMD", "AMD EPYC 9R14")
    assert {"amx_tile", "avx512_bf16"} <= cpu.flags and "amx_bf16" not in cpu.flags  # whole words, first entry
    assert "avx512" not in cpu.flags
    assert cpu_info(str(tmp_path / "missing")) == type(cpu)()  # no such file: empty fields, no error


def test_fast_bf16_falls_back_to_the_cpu_flags_without_the_torch_probe(monkeypatch):
    import autocmr.precision as precision

    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.setattr(precision, "cpu_info", lambda: precision.CpuInfo("GenuineIntel", "", frozenset({"amx_bf16"})))
    assert cpu_has_fast_bf16() is True
    monkeypatch.setattr(precision, "cpu_info", lambda: precision.CpuInfo("AuthenticAMD", "", frozenset({"fpu"})))
    assert cpu_has_fast_bf16() is False  # neither AMX nor AVX512-BF16 in the flags


@pytest.mark.parametrize("name, device, message", [("fp16", CPU, "needs a CUDA device"),
                                                   ("bf16", torch.device("mps"), "not supported on Apple MPS"),
                                                   ("half", CPU, "unknown precision 'half'")])
def test_impossible_precisions_are_refused(name, device, message):
    with pytest.raises(ConfigurationError, match=message):
        resolve_precision(name, device, training=True)


def test_train_options_reject_an_unknown_precision_and_hash_a_known_one():
    with pytest.raises(ConfigurationError, match="--precision"):
        TrainOptions(precision="int8")
    assert TrainOptions(precision="bf16").digest() != TrainOptions().digest()  # it changes what is learnt


def test_fast_precision_follows_the_hardware():
    assert fast_precision(CPU) == ("bf16" if cpu_has_fast_bf16() else "fp32")
    assert fast_precision(CUDA) == "fp16"


class _Recorder(nn.Module):
    """A 2d network that records the dtype its convolution computed in; pointwise, so tiling and mirroring
    leave its output unchanged and the blended logits can be compared with one pass over the whole slice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 1)
        self.seen: list[torch.dtype] = []

    def forward(self, x):
        y = self.conv(x)
        self.seen.append(y.dtype)
        return y


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_sliding_window_runs_the_network_in_the_requested_precision(precision, dtype):
    torch.manual_seed(0)
    net = _Recorder().eval()
    data = torch.randn(1, 3, 40, 36)
    out = predict_logits(net, data, patch_size=(32, 32), num_classes=4, mirror_axes=(0,), precision=precision)
    assert set(net.seen) == {dtype} and out.dtype == torch.float32 and out.shape == (4, 3, 40, 36)
    with torch.no_grad():
        exact = net.conv(data[0][:, None]).permute(1, 0, 2, 3)
    # blended in float32: bf16 keeps ~3 significant digits of each logit, fp32 is exact up to rounding
    tolerance = 1e-4 if precision == "fp32" else 0.05 * float(exact.abs().max())
    assert float((out - exact).abs().max()) < tolerance


def test_autocast_needs_a_resolved_precision():
    with pytest.raises(ConfigurationError, match="not resolved"):
        with autocast("auto", CPU):
            pass


@pytest.mark.parametrize("capability, refused", [((7, 5), True), ((8, 0), False), ((9, 0), False)])
def test_bf16_on_a_gpu_before_ampere_is_refused_naming_it(monkeypatch, capability, refused):
    """A T4 or V100 emulates bfloat16 (slower than float32); an A100 or H100 runs it natively."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    if refused:
        with pytest.raises(ConfigurationError, match=r"Tesla T4 \(compute capability 7.5\) has no native bfloat16"):
            resolve_precision("bf16", CUDA, training=True)
    else:
        assert resolve_precision("bf16", CUDA, training=False) == "bf16"
    assert resolve_precision("fp16", CUDA, training=True) == "fp16"  # float16 runs everywhere CUDA does
