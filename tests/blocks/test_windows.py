"""Window helpers against explicit slicing: padding amounts and placement, partition order, exact inverse."""

from __future__ import annotations

import pytest
import torch

from backbones.blocks._windows import avg_pool_ceil, pad_to_multiple, to_2tuple_int, window_partition, window_reverse


@pytest.mark.parametrize("hw", [(7, 7), (9, 13), (1, 2), (14, 21)])
@pytest.mark.parametrize("window", [7, (3, 5)])
def test_pad_to_multiple_pads_right_bottom_with_zeros(hw, window):
    wh, ww = (window, window) if isinstance(window, int) else window
    x = torch.randn(2, *hw, 5)
    y = pad_to_multiple(x, window)
    hp, wp = -(-hw[0] // wh) * wh, -(-hw[1] // ww) * ww
    assert y.shape == (2, hp, wp, 5)
    torch.testing.assert_close(y[:, : hw[0], : hw[1]], x, rtol=0, atol=0)
    assert y[:, hw[0] :].abs().sum() == 0 and y[:, :, hw[1] :].abs().sum() == 0
    # channels-first gives the same map
    y_cf = pad_to_multiple(x.permute(0, 3, 1, 2), window, channels_last=False)
    torch.testing.assert_close(y_cf, y.permute(0, 3, 1, 2), rtol=0, atol=0)


def test_pad_to_multiple_returns_input_when_aligned():
    x = torch.randn(1, 14, 7, 3)
    assert pad_to_multiple(x, 7) is x


@pytest.mark.parametrize("window", [(2, 3), (4, 4)])
def test_window_partition_order_and_inverse(window):
    wh, ww = window
    b, h, w, c = 2, 2 * wh, 3 * ww, 4
    x = torch.randn(b, h, w, c)
    windows = window_partition(x, window)
    assert windows.shape == (b * (h // wh) * (w // ww), wh * ww, c)
    i = 0
    for bi in range(b):
        for r in range(h // wh):  # windows row-major per image
            for s in range(w // ww):
                expected = x[bi, r * wh : (r + 1) * wh, s * ww : (s + 1) * ww].reshape(wh * ww, c)  # tokens row-major
                torch.testing.assert_close(windows[i], expected, rtol=0, atol=0)
                i += 1
    torch.testing.assert_close(window_reverse(windows, window, h, w), x, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [0, -1, (7,), (7, 0), "7", 2.5])
def test_bad_window_size_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="window_size must be"):
        to_2tuple_int(bad)


@pytest.mark.parametrize("size", [(13, 17), (12, 16), (1, 5)])
@pytest.mark.parametrize("s", [2, 3])
def test_avg_pool_ceil_is_ceil_mode_mean_of_real_pixels(size, s):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    h, w = size
    expected = torch.empty(2, 3, -(-h // s), -(-w // s), dtype=torch.float64)
    for i in range(expected.shape[2]):  # naive: the mean of the real pixels of every window
        for j in range(expected.shape[3]):
            expected[:, :, i, j] = x[:, :, i * s : (i + 1) * s, j * s : (j + 1) * s].mean((-2, -1))
    torch.testing.assert_close(avg_pool_ceil(x, s), expected)


def test_avg_pool_ceil_compiled_backward_matches_eager():
    """The reason the helper exists: inductor's ceil_mode avg_pool2d backward is wrong at the border windows."""
    x = torch.randn(1, 2, 7, 9)

    def grad(fn):
        t = x.clone().requires_grad_()
        return torch.autograd.grad(fn(t).square().sum(), t)[0]

    expected = grad(lambda t: torch.nn.functional.avg_pool2d(t, 2, 2, ceil_mode=True))
    torch._dynamo.reset()
    torch.testing.assert_close(grad(torch.compile(lambda t: avg_pool_ceil(t, 2), backend="inductor")), expected)
