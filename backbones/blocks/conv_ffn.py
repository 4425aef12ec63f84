"""ConvFFN: an MLP with a depthwise 3x3 convolution between its two linear layers (PVTv2 / LITv2 "DWMlp").

    y = fc2(act(DWConv_k(fc1(x))))        fc1: C -> h, dwconv: depthwise k x k (padding k // 2, bias), fc2: h -> o

The convolution mixes each hidden channel over its k x k neighbourhood, which gives models without any position
embedding (LITv2) their positional information. There is no residual inside and no norm.

Shapes: input (B, H, W, C) channels-last, output (B, H, W, o), any H and W. State-dict keys ``fc1``, ``dwconv``,
``fc2`` (official LITv2: ``fc1``, ``dwconv.dwconv``, ``fc2``).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from ._checks import check_shape

__all__ = ["ConvFFN"]


class ConvFFN(nn.Module):
    """Linear -> depthwise conv -> activation -> linear over a channels-last map.

    Args:
        in_features: input channels C.
        hidden_features: hidden channels h (default C).
        out_features: output channels (default C).
        kernel_size: odd size of the depthwise kernel.
        act_layer: activation after the depthwise conv.
        drop: dropout after the activation and after ``fc2``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        kernel_size: int = 3,
        act_layer: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if kernel_size % 2 == 0:
            raise ValueError(f"ConvFFN: kernel_size must be odd (a 'same' convolution), got {kernel_size}")
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.in_features = in_features
        self.fc1 = nn.Linear(in_features, hidden_features, **dd)
        self.dwconv = nn.Conv2d(
            hidden_features, hidden_features, kernel_size, padding=kernel_size // 2, groups=hidden_features, **dd
        )
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features, **dd)
        self.drop2 = nn.Dropout(drop)

    def init_dwconv(self) -> None:
        """The official LITv2 init of the depthwise conv: N(0, sqrt(2 / fan_out)), fan_out = k * k, zero bias."""
        k = self.dwconv.kernel_size
        nn.init.normal_(self.dwconv.weight, std=math.sqrt(2.0 / (k[0] * k[1])))
        nn.init.zeros_(self.dwconv.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = check_shape(
            x, 4, self.in_features, -1, f"ConvFFN: expected x of shape (B, H, W, {self.in_features}) (channels-last)"
        )
        x = self.fc1(x)
        # a permuted view: the conv sees NCHW with channels-last strides (no copy, fast depthwise kernels)
        x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = self.drop1(self.act(x))
        return self.drop2(self.fc2(x))
