"""Figures: orthogonal slices in ppm and L-curves.

Built on :class:`matplotlib.figure.Figure` directly (no pyplot state, no GUI
backend needed); save with :func:`save_figure`, which writes atomically.
"""

from __future__ import annotations

import numpy as np

__all__ = ["lcurve_figure", "orthoslices", "save_figure"]


def _slices(vol, index):
    vol = np.asarray(vol)
    if index is None:
        index = tuple(n // 2 for n in vol.shape)
    i, j, k = index
    # NIfTI (x, y, z) → displayed with the second axis up: transpose, origin lower
    return (
        ("axial", vol[:, :, k].T, (0, 1)),
        ("coronal", vol[:, j, :].T, (0, 2)),
        ("sagittal", vol[i, :, :].T, (1, 2)),
    )


def orthoslices(
    volumes,
    *,
    titles=None,
    voxel_size_mm=(1.0, 1.0, 1.0),
    window=(-0.1, 0.1),
    index=None,
    cmap="gray",
    label="χ (ppm)",
    suptitle=None,
):
    """Axial, coronal and sagittal slices of one or more volumes, one row each.

    Parameters
    ----------
    volumes : ndarray or sequence of ndarrays, each (x, y, z)
        CuPy arrays are copied to the host.
    titles : sequence of str, optional
        Row labels.
    voxel_size_mm : 3 floats
        For the aspect ratio of each panel.
    window : (float, float)
        Display range in the volumes' units (default ±0.1 ppm), one colour bar per row.
    index : 3 ints, optional
        Slice positions (default: the centre).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    if hasattr(volumes, "ndim"):
        volumes = [volumes]
    volumes = [
        v.get() if hasattr(v, "get") and not isinstance(v, np.ndarray) else np.asarray(v) for v in volumes
    ]
    titles = list(titles) if titles is not None else [None] * len(volumes)
    vox = np.broadcast_to(np.asarray(voxel_size_mm, dtype=float), (3,))
    fig = Figure(figsize=(9.5, 3.1 * len(volumes)), layout="constrained")
    axes = fig.subplots(len(volumes), 3, squeeze=False)
    for row, (vol, title) in enumerate(zip(volumes, titles, strict=True)):
        im = None
        for col, (name, img, (a, b)) in enumerate(_slices(vol, index)):
            ax = axes[row, col]
            im = ax.imshow(
                img,
                cmap=cmap,
                vmin=window[0],
                vmax=window[1],
                origin="lower",
                aspect=vox[b] / vox[a],
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name)
            if col == 0 and title:
                ax.set_ylabel(title)
        fig.colorbar(im, ax=axes[row, :].tolist(), shrink=0.9, label=label)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def lcurve_figure(curve, *, lam_optimal=None):
    """L-curve, its curvature and the GCV score, with the selected λ marked.

    Parameters
    ----------
    curve : mrirecon.qsm.LCurve
    lam_optimal : float, optional
        A reference λ (e.g. the NRMSE-optimal one on a phantom) to mark.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ax1.loglog(curve.data_fit, curve.regularization, ".-", color="0.3")
    for lam, colour, name in ((curve.lam_corner, "C3", "corner"), (curve.lam_gcv, "C2", "GCV")):
        i = int(np.argmin(np.abs(np.log(curve.lams / lam))))
        ax1.loglog(
            curve.data_fit[i], curve.regularization[i], "o", color=colour, label=f"{name}: λ = {lam:.3g}"
        )
    ax1.set_xlabel("data fit ‖F⁻¹DFχ − φ‖² (ppm²)")
    ax1.set_ylabel("regulariser Σ‖∇χ‖² (ppm²)")
    ax1.legend()
    ax1.set_title("L-curve")
    ax2.semilogx(curve.lams, curve.curvature, ".-", color="0.3")
    ax2.axvline(curve.lam_corner, color="C3", label="max curvature")
    ax2.set_ylabel("curvature")
    ax2.set_title("curvature of the L-curve")
    ax3.loglog(curve.lams, curve.gcv, ".-", color="0.3")
    ax3.axvline(curve.lam_gcv, color="C2", label="GCV minimum")
    ax3.set_ylabel("GCV score")
    ax3.set_title(f"GCV (selected: {curve.criterion}, λ = {curve.lam:.3g})")
    for ax in (ax2, ax3):
        if lam_optimal is not None:
            ax.axvline(lam_optimal, color="C0", ls="--", label=f"NRMSE-optimal λ = {lam_optimal:.3g}")
        ax.set_xlabel("λ")
        ax.legend()
    return fig


def save_figure(fig, path, *, force: bool = False, dpi: int = 120):
    """Save a figure (format from the suffix) atomically; refuses to overwrite unless ``force``."""
    from .io import atomic_path

    with atomic_path(path, force=force) as tmp:
        fig.savefig(tmp, dpi=dpi, format=str(path).rsplit(".", 1)[-1].lower())
    return path
