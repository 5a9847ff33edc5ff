"""Numeric precision of the network passes: float32, or mixed precision (autocast) in bfloat16 or float16.

Why bfloat16 on the CPU: on processors with Intel AMX (bfloat16 matrix tiles, Xeon since Sapphire Rapids)
oneDNN runs the convolutions of the CPU plans' 2d network about twice as fast in bfloat16, and a whole
training iteration 1.5x as fast (README, "CPU precision"), and bfloat16 has float32's exponent range, so
training needs no loss scaling. On AMD CPUs with AVX512-BF16 (EPYC Zen 4) the default model's prediction ran
1.4x as fast in bfloat16. AVX512-BF16 on an Intel Xeon without AMX is not enough: there a training step ran
at 0.8x and a forward pass at 0.75x float32's speed (README), and without either bfloat16 is emulated, slower
still. So ``auto`` asks for what was measured fast, not for "bf16 supported". float16 stays CUDA's mixed
precision (with a gradient scaler in training), as before this module.

``auto`` resolves per purpose: training on CUDA -> fp16 (nnU-Net's recipe); prediction on a CPU with fast
bfloat16 -> bf16 (a cross-validation's 160 validation volumes predicted both ways give the same Dice
and clinical measures, README "CPU precision"); everything else -> fp32. Training on the CPU stays fp32 unless
asked (``--precision bf16``, which the default model's recipe asks for), because it changes what is learnt.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch

from autocmr.errors import ConfigurationError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_fast_bf16() -> bool:
    """True on CPUs where bfloat16 was measured faster than float32: Intel AMX tiles, or AVX512-BF16 on AMD.

    Not oneDNN's ``_is_mkldnn_bf16_supported()``: that is also true for AVX512-BF16 on an Intel Xeon without
    AMX, where bfloat16 was measured slower than float32 (module docstring)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, present since torch 2.3
    cpu = cpu_info()
    if probe is not None:
        try:
            if probe():
                return True
        except RuntimeError:
            pass
    elif "amx_bf16" in cpu.flags:
        return True
    return cpu.vendor == "AuthenticAMD" and "avx512_bf16" in cpu.flags


@dataclass(frozen=True)
class CpuInfo:
    """The first processor's entry of Linux's /proc/cpuinfo; empty fields where there is no such file."""

    vendor: str = ""  # vendor_id: GenuineIntel, AuthenticAMD...
    model: str = ""  # model name
    flags: frozenset[str] = frozenset()


def cpu_info(path: str = "/proc/cpuinfo") -> CpuInfo:
    """The CPU's vendor, model name and feature flags, in one read of ``path``."""
    fields: dict[str, str] = {}
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                if not line.strip():  # the first processor's entry ends at the first blank line
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return CpuInfo(fields.get("vendor_id", ""), fields.get("model name", ""),
                   frozenset(fields.get("flags", "").split()))


def resolve_precision(name: str | None, device: torch.device, *, training: bool) -> str:
    """``auto``/``fp32``/``bf16``/``fp16`` for ``device`` -> the precision used (never ``auto``).

    Raises :class:`ConfigurationError` for an unknown name, for fp16 off CUDA (CPU float16 convolutions are
    slow and training would need a scaler the CPU path does not have) and for bf16 on a device that cannot run it.
    """
    name = (name or "auto").lower()
    if name not in PRECISIONS:
        raise ConfigurationError(f"unknown precision {name!r}; use one of {', '.join(PRECISIONS)}")
    if name == "auto":
        if training:
            return "fp16" if device.type == "cuda" else "fp32"
        return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ConfigurationError(f"--precision fp16 needs a CUDA device, not {device.type}; use bf16 or fp32")
    if name == "bf16" and device.type == "mps":
        raise ConfigurationError("--precision bf16 is not supported on Apple MPS here; use fp32")
    if name == "bf16" and device.type == "cuda" and torch.cuda.is_available():
        # before Ampere (compute capability 8.0) bfloat16 is emulated: slower than float32, not a speed-up
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            raise ConfigurationError(f"--precision bf16: {torch.cuda.get_device_name(device)} (compute capability "
                                     f"{major}.{minor}) has no native bfloat16 (needs 8.0 or newer); use fp16 or fp32")
    return name


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The autocast context of a resolved ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in _DTYPES:
        raise ConfigurationError(f"precision {precision!r} is not resolved; call resolve_precision first")
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def fast_precision(device: torch.device) -> str:
    """The fastest precision for passes whose result is only a rough estimate (the fast cine pass's volume
    curve): fp16 on CUDA, bf16 on a CPU with AMX, else fp32."""
    if device.type == "cuda":
        return "fp16"
    return resolve_precision("auto", device, training=False)  # bf16 where the CPU has AMX
