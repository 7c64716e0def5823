"""Plot helpers whose logic can be wrong: the pixel on the object, masks drawn as outlines."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hsnetlib.viz import draw_mask, interior_point, show, val_curves  # noqa: E402


def ring(size=64, r_in=10, r_out=24):
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    d = ((x - size / 2) ** 2 + (y - size / 2) ** 2).sqrt()
    return ((d >= r_in) & (d <= r_out)).long()


def test_interior_point_is_on_a_ring_where_the_centroid_is_not():
    mask = ring()
    ys, xs = mask.nonzero(as_tuple=True)
    assert mask[int(ys.float().mean()), int(xs.float().mean())] == 0  # the centroid is in the hole
    x, y = interior_point(mask)
    row, col = int(y * 64), int(x * 64)
    assert mask[row, col] == 1
    # farther from the background than any boundary pixel: all 3x3 neighbours are on the object too
    assert mask[row - 1 : row + 2, col - 1 : col + 2].all()


def test_interior_point_on_tiny_and_empty_masks():
    one = torch.zeros(9, 7, dtype=torch.long)
    one[4, 2] = 1
    assert interior_point(one) == pytest.approx((2.5 / 7, 4.5 / 9))
    with pytest.raises(ValueError, match="empty"):
        interior_point(torch.zeros(5, 5))


def test_masks_are_drawn_as_tint_and_outline():
    fig, ax = plt.subplots()
    show(ax, torch.rand(64, 64, 3).numpy(), "x", ring(), (1.0, 0.0, 0.0))
    assert len(ax.collections) == 2  # dark edge + coloured outline
    fig2, ax2 = plt.subplots()
    draw_mask(ax2, torch.zeros(8, 8), (1, 0, 0))  # empty mask: no outline, no error
    assert len(ax2.collections) == 0
    plt.close("all")


def test_val_curves_one_line_per_run_and_whole_epoch_ticks():
    from types import SimpleNamespace

    import pandas as pd

    runs = {
        name: SimpleNamespace(history=pd.DataFrame({"epoch": [0, 1, 2], "val_miou": v}))
        for name, v in (("a", [1.0, 5.0, 9.0]), ("b", [2.0, 2.5, 3.0]))
    }
    fig = val_curves(runs)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b"]
    assert list(ax.get_lines()[0].get_ydata()) == [1.0, 5.0, 9.0]
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in ax.get_xticks())
    plt.close(fig)
