"""How the distance op's vocabulary-sized matmuls read their operands (h·e and the two backward
products): ``float32`` (exact, the default), ``tf32`` (CUDA TF32 tensor cores: 10-bit
mantissas) or ``bf16`` (operands rounded to bfloat16, products accumulated and returned in
float32). The norms ‖h‖², ‖e‖², the elementwise steps and the column-sum rows stay float32.

On the CPU the rounding is emulated (the same rounded operands, a float32 matmul): that is how
the tests check that a KNN head's loss curve stays within the noise of float32. A process-wide
setting, like ``torch.set_float32_matmul_precision``: `set_matmul_precision`,
`use_matmul_precision`, or the environment variable ``GEOMLENS_HEADS_MATMUL``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator, Literal

import torch
from torch import Tensor

from geomlens.geometry import distances as vocab_distances

logger = logging.getLogger(__name__)

MatmulPrecision = Literal["float32", "tf32", "bf16"]
MATMUL_PRECISIONS: tuple[MatmulPrecision, ...] = ("float32", "tf32", "bf16")
_state: dict[str, object] = {"precision": os.environ.get("GEOMLENS_HEADS_MATMUL", "float32"),
                             "bf16_out_failed": False}


def set_matmul_precision(precision: str) -> None:
    """Choose ``float32``, ``tf32`` or ``bf16`` (module docstring)."""
    if precision not in MATMUL_PRECISIONS:
        raise ValueError(f"matmul precision must be one of {MATMUL_PRECISIONS}, got {precision!r}")
    _state["precision"] = precision


def get_matmul_precision() -> MatmulPrecision:
    return _state["precision"]  # type: ignore[return-value]


@contextlib.contextmanager
def use_matmul_precision(precision: str) -> Iterator[None]:
    old = get_matmul_precision()
    set_matmul_precision(precision)
    try:
        yield
    finally:
        set_matmul_precision(old)


def round_operand(x: Tensor, precision: str) -> Tensor:
    """``x`` (float32) as a ``precision`` matmul reads it: bf16 rounds to nearest even; tf32
    keeps 10 mantissa bits, rounded to nearest (ties away from zero; finite values)."""
    if precision == "bf16":
        return x.bfloat16().float()
    if precision == "tf32":
        bits = x.contiguous().view(torch.int32)
        return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)
    return x


@contextlib.contextmanager
def _cuda_tf32() -> Iterator[None]:
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` in float32 at the chosen precision."""
    precision = get_matmul_precision()
    if precision == "float32":
        return a @ b
    if a.is_cuda and precision == "tf32":
        with _cuda_tf32():
            return a @ b
    if a.is_cuda and not _state["bf16_out_failed"]:
        try:  # bf16 tensor cores, float32 accumulation and output
            return torch.mm(a.bfloat16(), b.bfloat16(), out_dtype=torch.float32)
        except (RuntimeError, TypeError) as exc:
            _state["bf16_out_failed"] = True
            logger.warning("bf16 matmul with float32 output unavailable (%s); emulating", exc)
    return round_operand(a, precision) @ round_operand(b, precision)


def sq_distance(h2d: Tensor, h_sq: Tensor, W_E: Tensor, e_sq: Tensor, out: Tensor | None = None
                ) -> Tensor:
    """‖h‖² + ‖e‖² − 2 h·e, unclamped (`sq_distance_block` with h·e at the chosen precision)."""
    precision = get_matmul_precision()
    if precision == "float32":
        return vocab_distances.sq_distance_block(h2d, h_sq, W_E, e_sq, floor=None, out=out)
    if h2d.is_cuda and precision == "tf32":  # one addmm, as at float32
        with _cuda_tf32():
            return vocab_distances.sq_distance_block(h2d, h_sq, W_E, e_sq, floor=None, out=out)
    out = torch.add(h_sq, e_sq, out=out)
    return out.add_(matmul(h2d, W_E.T), alpha=-2.0)


def left_product(rows: Tensor, g: Tensor, d_model: int) -> Tensor:
    """``rows @ g``: the first d_model rows (hᵀ) at the chosen precision, the column-sum rows
    after them in float32 (they enter differences of large sums)."""
    if get_matmul_precision() == "float32":
        return rows @ g
    return torch.cat([matmul(rows[:d_model], g), rows[d_model:] @ g], dim=0)


def addmm_neg(c: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``c − a @ b`` (``torch.addmm(c, a, b, alpha=-1)`` at float32)."""
    if get_matmul_precision() == "float32":
        return torch.addmm(c, a, b, alpha=-1.0)
    return c - matmul(a, b)
