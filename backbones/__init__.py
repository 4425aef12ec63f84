"""Vision backbones built from block-level attention modules, registered with timm.

``import backbones`` registers every model of this repository with timm, so ``timm.create_model(name)`` builds
them; :func:`list_models` lists them.
"""

from ._bench import benchmark_references, register_reference
from ._registry import TIMM_REPLACEMENTS, is_replacement, list_models, register_model, timm_original
from ._weights import IncompleteCheckpointError, WeightsUnavailableError
from .models import *  # noqa: F401,F403  (registers every family)
from .models._common import load_checkpoint

__version__ = "0.1.0"
__all__ = [
    "list_models", "create_model", "load_checkpoint", "register_model", "timm_original", "is_replacement",
    "TIMM_REPLACEMENTS", "benchmark_references", "register_reference", "IncompleteCheckpointError",
    "WeightsUnavailableError",
]


def create_model(model_name: str, pretrained: bool = False, **kwargs):
    """``timm.create_model`` with a clear error for names that are not in this repository."""
    import timm

    arch = model_name.split(".")[0]
    if arch not in list_models():
        import difflib

        close = difflib.get_close_matches(arch, list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model name {model_name!r}: not a backbones model{hint} (see backbones.list_models())"
        )
    return timm.create_model(model_name, pretrained=pretrained, **kwargs)
