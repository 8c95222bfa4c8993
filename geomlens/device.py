"""Device resolution with a clear error when CUDA is asked for but absent."""

from __future__ import annotations

import torch

from geomlens.errors import InputError

#: the device types geomlens runs on
DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` -> cuda if available else cpu. Asking for an absent CUDA/MPS device raises."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        dev = None
    if dev is None or dev.type not in DEVICE_TYPES:
        raise InputError(f"Unknown device {str(device)!r}; use one of cpu, cuda, cuda:N, mps "
                         "(or leave --device unset: cuda if available, else cpu).")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"Device {str(device)!r} was requested but this machine has no CUDA GPU "
                "(torch.cuda.is_available() is False). Use --device cpu."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"Device {str(device)!r} does not exist: {torch.cuda.device_count()} CUDA device(s)."
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"Device {str(device)!r} was requested but MPS is not available.")
    return dev
