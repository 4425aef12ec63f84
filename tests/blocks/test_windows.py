"""Window helpers against explicit slicing: padding amounts and placement, partition order, exact inverse."""

from __future__ import annotations

import pytest
import torch

from backbones.blocks._windows import pad_to_multiple, to_2tuple_int, window_partition, window_reverse


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
