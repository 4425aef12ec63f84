"""OpenMMLab integration: this repository's models as mmdet / mmseg backbones.

Configs import it with ``custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)``;
``import backbones`` alone never imports OpenMMLab.

Registered, in mmdet's and in mmseg's registries (each only when that framework is installed), so an
unprefixed ``type=`` works in both ``default_scope='mmdet'`` and ``'mmseg'`` configs:

* MODELS: :class:`TimmBackboneAdapter` (``type='TimmBackboneAdapter'``).
* OPTIM_WRAPPER_CONSTRUCTORS: :class:`LayerDecayOptimWrapperConstructor`.
* HOOKS (mmengine's root registry, found from both scopes): :class:`DenseCheckpointLayoutHook`, which converts
  official detector / segmentor checkpoints (``load_from``, ``tools/test.py``) and loads them strictly.

Registering into each framework's own registry (rather than mmengine's root registry) keeps the names visible
in ``mmdet::model`` / ``mmseg::model`` listings and cannot be shadowed by a same-named class of the framework;
the cost is importing ``mmdet.registry`` / ``mmseg.registry`` (cheap: neither imports the model zoo).
"""

from __future__ import annotations

import importlib

from .adapter import TimmBackboneAdapter, read_checkpoint
from .checkpoint import DenseCheckpointLayoutHook
from .efficientvit_fpn import EfficientViTFPN  # noqa: F401  (EfficientViT-MSRA detection neck, owned by its family)
from .layer_decay import LayerDecayOptimWrapperConstructor

__all__ = ["TimmBackboneAdapter", "LayerDecayOptimWrapperConstructor", "DenseCheckpointLayoutHook", "read_checkpoint",
           "REGISTERED_IN"]

REGISTERED_IN: list[str] = []


def _register() -> None:
    for scope in ("mmdet", "mmseg"):
        try:
            registry = importlib.import_module(f"{scope}.registry")
        except ImportError:
            continue
        for reg_name, cls in (("MODELS", TimmBackboneAdapter),
                              ("OPTIM_WRAPPER_CONSTRUCTORS", LayerDecayOptimWrapperConstructor)):
            reg = getattr(registry, reg_name)
            if reg.module_dict.get(cls.__name__) is not cls:  # idempotent on re-import
                reg.register_module(module=cls)
        REGISTERED_IN.append(scope)


_register()
