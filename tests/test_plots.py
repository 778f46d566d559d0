"""Accuracy plots: curves that reach 100 % stay visible (not drawn on the frame, not hidden
under each other)."""

import numpy as np

from nemopose.tools import plots


def test_curves_at_100_percent_stay_visible(tmp_path):
    perfect = {name: np.array([1.0, 2.0, 3.0]) for name in ("car", "bus", "aero", "bike", "boat", "chair", "sofa")}
    fig = plots.accuracy_figure(perfect, "all perfect")
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if line.get_label() in {f"{k} (3)" for k in perfect}]
    assert len(lines) == len(perfect)
    assert all(np.nanmax(line.get_ydata()) == 100.0 for line in lines)
    top = ax.get_ylim()[1]
    assert top >= 102.0                              # room above 100 %: the curves are not on the frame
    # no two curves drawn alike, and the later (thinner) ones leave the earlier ones visible
    looks = {(line.get_color(), str(line.get_linestyle()), line.get_linewidth()) for line in lines}
    assert len(looks) == len(lines)
    widths = [line.get_linewidth() for line in lines]
    assert widths == sorted(widths, reverse=True) and widths[-1] >= 1.0
    png = plots.plot_categories(tmp_path / "a.png", perfect, "t")
    assert png.stat().st_size > 1000
