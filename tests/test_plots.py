"""Plots."""

import numpy as np
import pytest

from numpyro_ebm.plots import plot_image_grid


def test_image_grid_tiles_in_order_and_refuses_other_shapes():
    images = np.arange(4 * 6, dtype=float).reshape(4, 6)  # four 2 x 3 images
    grid = np.ma.filled(
        plot_image_grid(images, (2, 3), rows=2).images[0].get_array(), np.nan
    )
    assert grid.shape == (5, 7)  # one pixel between tiles
    np.testing.assert_array_equal(grid[:2, 4:], images[1].reshape(2, 3))
    np.testing.assert_array_equal(grid[3:, :3], images[2].reshape(2, 3))
    assert np.isnan(grid[2]).all() and np.isnan(grid[:, 3]).all()  # the gaps
    with pytest.raises(ValueError, match="image_shape"):
        plot_image_grid(images, (2, 3, 1))
    with pytest.raises(ValueError, match="must have shape"):
        plot_image_grid(np.zeros((4, 2, 3, 3)), (2, 3))  # colour images


def test_plots_are_reachable_from_the_package_lazily():
    import subprocess
    import sys

    code = (
        "import sys, numpyro_ebm as ne; assert 'matplotlib' not in sys.modules; "
        "ne.plots.plot_history; assert 'numpyro_ebm.plots' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
