"""Autocast queries that also work for device types autocast does not know (e.g. 'meta')."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast_enabled", "autocast_off", "autocast_on_for"]


def autocast_enabled(device_type: str) -> bool:
    """True when autocast is on for ``device_type``."""
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # e.g. 'meta'
        return False


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """A context that switches autocast off for ``device_type`` when it is on (a no-op otherwise)."""
    if autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def autocast_on_for(x: torch.Tensor) -> bool:
    """True when autocast is on for the device of ``x``; False under TorchScript (which does not autocast)."""
    if torch.jit.is_scripting():
        return False
    else:
        return autocast_enabled(x.device.type)
