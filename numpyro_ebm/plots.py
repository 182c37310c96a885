"""Plots for 2-D energies, images and training runs (needs matplotlib: the
``examples`` extra)."""

import math

import numpy as np

import jax.numpy as jnp

__all__ = ["plot_density_2d", "bounds_around", "plot_history", "plot_image_grid"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            "plots need matplotlib: pip install 'numpyro-ebm[examples]'"
        ) from err
    return plt


def plot_density_2d(
    energy_fn,
    bounds,
    samples=None,
    *,
    num_grid=200,
    ax=None,
    title=None,
    log=False,
    labels=("$z_1$", "$z_2$"),
    colorbar=True,
    cmap="Blues",
    samples_label="draws",
):
    """Filled contours of the density ``exp(-E)`` on a grid, samples on top.

    Low density is light and high density dark, the samples are small dark
    dots, the axes are labelled and a colour bar says what the shading is
    (``exp(-E)`` relative to its maximum, or ``-E`` with ``log=True``).

    Args:
        energy_fn: maps points ``(n, 2)`` to energies ``(n,)``.
        bounds: ``((xmin, xmax), (ymin, ymax))``.
        samples: optional points ``(m, 2)`` to scatter.
        num_grid: grid points per axis.
        ax: a matplotlib axis (a new figure when ``None``).
        title: axis title.
        log: show ``-E`` (the unnormalised log density) instead of ``exp(-E)``.
        labels: the axis labels.
        colorbar: draw a labelled colour bar.
        cmap: the matplotlib colour map.
        samples_label: the samples' legend label.

    Returns:
        The matplotlib axis.

    Example:
        >>> import jax.numpy as jnp
        >>> ax = plot_density_2d(lambda x: 0.5 * jnp.sum(x**2, -1), ((-3, 3), (-3, 3)))
        >>> [float(v) for v in ax.get_xlim()], ax.get_xlabel()
        ([-3.0, 3.0], '$z_1$')
    """
    plt = _pyplot()
    (xmin, xmax), (ymin, ymax) = bounds
    gx = np.linspace(xmin, xmax, num_grid)
    gy = np.linspace(ymin, ymax, num_grid)
    xx, yy = np.meshgrid(gx, gy, indexing="xy")
    points = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
    log_density = -np.asarray(energy_fn(points), np.float64).reshape(xx.shape)
    z = log_density if log else np.exp(log_density - log_density.max())
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4), layout="constrained")
    filled = ax.contourf(xx, yy, z, levels=30, cmap=cmap)
    if colorbar:
        bar = ax.figure.colorbar(filled, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label("$-E$ (unnormalised log density)" if log else "density / max")
    if samples is not None:
        s = np.asarray(samples)
        ax.scatter(
            s[:, 0],
            s[:, 1],
            s=2,
            c="#d62728",
            alpha=0.25,
            linewidths=0,
            label=samples_label,
        )
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)
    ax.set_aspect("equal")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    if title:
        ax.set_title(title)
    return ax


def bounds_around(samples, margin=0.25):
    """``((xmin, xmax), (ymin, ymax))`` around 2-D samples, for zooming in.

    A square window centred on the 0.5%..99.5% range of the coordinates, as
    wide as the wider of the two ranges plus ``margin`` of it on each side.

    Example:
        >>> import numpy as np
        >>> (x0, x1), _ = bounds_around(np.random.default_rng(0).normal(size=(1000, 2)))
        >>> x0 < -2.5 < 2.5 < x1
        True
    """
    s = np.asarray(samples)
    low, high = np.percentile(s, 0.5, axis=0), np.percentile(s, 99.5, axis=0)
    # a square window, so that equal axis scales fill the panel
    half = (1 + 2 * margin) * np.max(high - low) / 2
    centre = (low + high) / 2
    return tuple((float(c - half), float(c + half)) for c in centre)


def plot_history(history, keys=None, *, axes=None, smooth=None):
    """Training curves: one panel per metric of a run's ``history``.

    Args:
        history: dict of per-step arrays (``result.history``).
        keys: metrics to show (default: all).
        axes: matplotlib axes, one per key.
        smooth: moving-average window (default: about 1% of the steps).

    Returns:
        The array of axes.

    Example:
        >>> import numpy as np
        >>> axes = plot_history({"loss": np.linspace(1, 0, 100)})
        >>> len(axes)
        1
    """
    plt = _pyplot()
    keys = list(history) if keys is None else list(keys)
    if axes is None:
        _, axes = plt.subplots(
            1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False
        )
        axes = axes[0]
    for key, ax in zip(keys, axes, strict=True):
        values = np.asarray(history[key], np.float64)
        window = smooth or max(1, len(values) // 100)
        kernel = np.ones(window) / window
        ax.plot(values, alpha=0.3, lw=0.8)
        if window > 1:
            ax.plot(
                np.arange(window - 1, len(values)), np.convolve(values, kernel, "valid")
            )
        ax.set_title(key)
        ax.set_xlabel("step")
    plt.tight_layout()
    return axes


def plot_image_grid(
    images,
    image_shape,
    *,
    rows=8,
    ax=None,
    title=None,
    vmin=None,
    vmax=None,
    spacing=1,
):
    """Flattened images tiled into a ``rows x rows`` grid (the first ones).

    Tiles are separated by ``spacing`` pixels of background, so that
    neighbouring images do not run into each other.

    Args:
        images: array ``(n, prod(image_shape))`` or ``(n, *image_shape)``.
        image_shape: ``(height, width)`` of one image.
        rows: images per row and per column.
        ax: a matplotlib axis (a new figure when ``None``).
        title: axis title.
        vmin, vmax: grey-level range (default: the data's).
        spacing: pixels between tiles.

    Returns:
        The matplotlib axis.

    Example:
        >>> import numpy as np
        >>> ax = plot_image_grid(np.zeros((16, 64)), (8, 8), rows=4)
        >>> ax.images[0].get_array().shape  # 4 tiles of 8 and 3 gaps of 1
        (35, 35)
    """
    if len(tuple(image_shape)) != 2:
        raise ValueError(
            f"`image_shape` must be (height, width) of a grey-level image, got "
            f"{image_shape!r}."
        )
    h, w = image_shape
    images = np.asarray(images)
    if images.ndim < 2 or math.prod(images.shape[1:]) != h * w:
        raise ValueError(
            f"`images` must have shape (n, {h * w}) or (n, {h}, {w}), got "
            f"{images.shape}."
        )
    plt = _pyplot()
    images = images.reshape(-1, h, w)[: rows * rows]
    spacing = int(spacing)
    step_h, step_w = h + spacing, w + spacing
    grid = np.full((rows * step_h - spacing, rows * step_w - spacing), np.nan)
    for i, image in enumerate(images):
        r, c = divmod(i, rows)
        grid[r * step_h : r * step_h + h, c * step_w : c * step_w + w] = image
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    # the gaps and empty tiles
    cmap = plt.get_cmap("gray_r").with_extremes(bad="#dde3ea")
    ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax
