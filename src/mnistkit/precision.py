"""Mixed precision: where bf16 autocast is worth using, shared by training and inference."""

from __future__ import annotations

import contextlib

import torch


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 in hardware (emulated bf16 would be slower than fp32)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # private helpers: absent on other builds/platforms
        return False


def autocast(device: torch.device, enabled: bool):
    """A factory of bf16 autocast contexts when enabled: on CUDA, and on CPUs with native bf16
    matmul (AVX512-BF16 / AMX), where oneDNN's bf16 GEMM runs about 2x the fp32 one (measured on
    a Zen 4: 46 -> 95 GFLOP/s per core for the seed-mlp's 64x784x512 product). Parameters stay
    fp32. Elsewhere, a no-op context factory."""
    device = torch.device(device)
    if enabled and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    if enabled and device.type == "cpu" and cpu_has_native_bf16():
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext
