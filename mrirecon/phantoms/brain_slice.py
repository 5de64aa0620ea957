"""A brain-like complex 2-D slice of the head phantom, for parallel imaging."""

from __future__ import annotations

import numpy as np

from .head import TISSUE_M0 as _M0
from .head import head_phantom

__all__ = ["brain_slice"]


def brain_slice(shape=(256, 256), *, fov_mm=192.0, texture=0.05, seed=0, dtype=np.complex64):
    """A brain-like complex 2-D image (axial slice of the head phantom) for parallel imaging.

    Parameters
    ----------
    shape : 2 ints
        (n0, n1): n0 is the phase-encoding axis (anterior–posterior), n1 the readout (left–right).
    fov_mm : float
        Square field of view in mm.
    texture : float
        Relative amplitude of smooth random texture added to each tissue's
        intensity (so the image is not piecewise constant, which favours L1
        methods unfairly); 0 turns it off.
    seed : int

    Returns
    -------
    ndarray, complex, shape ``shape``
        Magnitude from the tissues' proton densities (as in :func:`simulate_megre`,
        with a scalp ring), times a smooth phase; maximum magnitude about 1.
    """
    from scipy.ndimage import gaussian_filter

    n0, n1 = (int(n) for n in shape)
    vox = (fov_mm / n1, fov_mm / n0)
    # one voxel as thick as the field of view: its centre is the head's central axial plane
    ph = head_phantom((n1, n0, 1), voxel_size_mm=(vox[0], vox[1], fov_mm))
    labels = ph.labels[:, :, 0].T  # (y, x): phase encoding along anterior–posterior
    names = ph.label_names
    m0 = np.array([_M0.get(name, 0.0) for name in names], dtype=np.float32)[labels]
    y = ((np.arange(n0) - (n0 - 1) / 2.0) * vox[1])[:, None]
    x = ((np.arange(n1) - (n1 - 1) / 2.0) * vox[0])[None, :]
    head = (x / 82.0) ** 2 + (y / 97.0) ** 2 <= 1.0
    m0 = np.where(head & (labels == 0), np.float32(0.5), m0)
    rng = np.random.default_rng(seed)
    if texture:
        tex = gaussian_filter(rng.standard_normal((n0, n1)), sigma=max(n0, n1) / 128.0)
        tex /= np.abs(tex).max() + 1e-12
        m0 = m0 * (1.0 + texture * tex).astype(np.float32)
    phase = 0.6 * np.cos(np.pi * x / fov_mm) * np.sin(np.pi * y / fov_mm) + 0.3
    img = m0 * np.exp(1j * phase)
    img /= np.abs(img).max()
    return img.astype(dtype)
