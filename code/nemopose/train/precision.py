"""Training precision: ``fp32`` (the original's, the default) or ``bf16`` mixed precision.

``bf16`` runs the network's forward (the backbone's convolutions and matrix products) under
``torch.autocast(device_type, dtype=torch.bfloat16)``; everything whose rounding would change
what is learnt stays float32:

- the weights, the optimiser state and the checkpoints (autocast casts copies on the fly), so a
  bf16-trained checkpoint is an ordinary fp32 one for inference and can be resumed in fp32;
- the head and the L2 normalisation (``NeMoNet`` leaves autocast for them): the features feed
  logits divided by T = 0.07, where bf16's rounding of a similarity (~0.004) would be ~0.06;
- the loss and the bank (:mod:`nemopose.train.bank`): they run outside the autocast region.

bfloat16 keeps float32's exponent range, so unlike float16 it needs no loss scaling. On CUDA,
bf16 also puts the model and its inputs in ``channels_last`` memory format (the layout the
tensor cores' convolution kernels read without transposes). On CPU bf16 runs too (autocast
cpu), but it is only faster on CPUs with bfloat16 instructions (AVX512-BF16, AMX); on this
project's AVX2 machine it is ~10x slower (``benchmarks/bench_train.py`` measures it).
"""

from __future__ import annotations

import contextlib

import torch

from ..errors import UsageError

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, device: torch.device) -> None:
    """Raise :class:`UsageError` for an unknown precision, or bf16 on a GPU without bf16."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support "
                         "(needs compute capability 8.0 or later); use --precision fp32")


def network_autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context to run the network's forward in: bf16 autocast, or nothing for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def memory_format(precision: str, device: torch.device) -> torch.memory_format:
    """``channels_last`` for bf16 on CUDA, else the default (contiguous) format."""
    return torch.channels_last if precision == "bf16" and device.type == "cuda" else torch.contiguous_format
