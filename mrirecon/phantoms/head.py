"""Numerical phantoms built from the definitions shipped in ``phantoms/``.

A phantom definition is a JSON file (``phantoms/<name>.json`` in a source checkout,
package ``mrirecon._phantom_data`` in an installed wheel) that lists tissues (name,
susceptibility ``chi_ppm`` relative to CSF, literature ``source``) and simple shapes
(ellipsoids, spheres and tubes in millimetres from the volume centre) painted in order.

Grid convention
---------------
Arrays are in NIfTI voxel order (x, y, z): x runs left to right, y posterior to
anterior, z inferior to superior (RAS). Along an axis of ``n`` voxels of size ``d`` mm,
the centre of voxel ``i`` lies at ``(i - (n - 1) / 2) * d`` mm from the volume centre,
so the grid is symmetric about the centre for even and odd ``n`` alike (a mirrored
definition gives an exactly mirrored phantom). A voxel belongs to a shape when its
centre lies inside it (no partial-volume supersampling).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidParameterError, MriReconError

__all__ = ["TISSUE_M0", "HeadPhantom", "head_phantom", "load_definition", "simulate_field"]

_PHANTOM_PACKAGE = "mrirecon._phantom_data"
_SOURCE_DIR = Path(__file__).resolve().parents[2] / "phantoms"
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
_SHAPE_TYPES = ("ellipsoid", "sphere", "tube")


@dataclass(frozen=True, eq=False)
class HeadPhantom:
    """A rasterised head phantom.

    Attributes
    ----------
    chi : numpy.ndarray
        Susceptibility in ppm relative to CSF, shape (x, y, z), of the requested
        floating dtype; 0 outside the brain (and in CSF).
    mask : numpy.ndarray
        Boolean brain mask, equal to ``labels > 0``.
    labels : numpy.ndarray
        Tissue label per voxel (uint8); 0 is outside the brain.
    label_names : tuple of str
        Tissue name of each label value (``label_names[0] == "background"``).
    voxel_size_mm : tuple of float
        Voxel size along (x, y, z) in mm.
    """

    chi: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    voxel_size_mm: tuple[float, float, float]

    @property
    def fov_mm(self) -> tuple[float, float, float]:
        """Field of view along (x, y, z) in mm: ``shape * voxel_size_mm``."""
        return tuple(n * d for n, d in zip(self.chi.shape, self.voxel_size_mm, strict=True))


def _available_names() -> list[str]:
    names: set[str] = set()
    try:
        root = importlib.resources.files(_PHANTOM_PACKAGE)
        names.update(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json"))
    except ModuleNotFoundError:
        pass
    if _SOURCE_DIR.is_dir():
        names.update(p.stem for p in _SOURCE_DIR.glob("*.json"))
    return sorted(names)


def _read_definition_text(name: str) -> str | None:
    try:
        resource = importlib.resources.files(_PHANTOM_PACKAGE).joinpath(f"{name}.json")
        if resource.is_file():
            return resource.read_text(encoding="utf-8")
    except ModuleNotFoundError:
        pass
    path = _SOURCE_DIR / f"{name}.json"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    return None


def load_definition(name: str = "head") -> dict:
    """Read a phantom definition.

    Parameters
    ----------
    name : str, optional
        Phantom name: the definition is ``<name>.json`` in package
        ``mrirecon._phantom_data`` (installed) or in the repository's ``phantoms/``
        folder (source checkout).

    Returns
    -------
    dict
        The parsed JSON (a fresh copy on every call): ``fov_mm``, ``units``,
        ``reference``, ``tissues`` (``name``, ``chi_ppm``, ``source``) and ``shapes``.

    Raises
    ------
    MriReconError
        If no definition of that name exists, or it is not valid.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidParameterError(f"phantom name must be a plain name such as 'head', got {name!r}")
    text = _read_definition_text(name)
    if text is None:
        available = ", ".join(_available_names()) or "none found"
        raise MriReconError(f"unknown phantom {name!r}; available phantoms: {available}")
    try:
        definition = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MriReconError(f"phantom definition {name!r} is not valid JSON: {exc}") from exc
    _validate_definition(definition, name)
    return definition


def _vec3(value: Any, what: str, *, positive: bool = False) -> tuple[float, float, float]:
    try:
        vec = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        vec = ()
    if len(vec) != 3 or not all(math.isfinite(v) for v in vec):
        raise MriReconError(f"{what} must be three finite numbers, got {value!r}")
    if positive and min(vec) <= 0:
        raise MriReconError(f"{what} must be positive, got {value!r}")
    return vec


def _validate_definition(definition: Any, name: str) -> None:
    where = f"phantom definition {name!r}"
    if not isinstance(definition, dict):
        raise MriReconError(f"{where} must be a JSON object")
    for key in ("fov_mm", "tissues", "shapes"):
        if key not in definition:
            raise MriReconError(f"{where} lacks the key {key!r}")
    _vec3(definition["fov_mm"], f"{where}: fov_mm", positive=True)
    tissues = definition["tissues"]
    if not isinstance(tissues, list) or not 0 < len(tissues) < 255:
        raise MriReconError(f"{where}: 'tissues' must be a list of 1 to 254 entries")
    tissue_names = set()
    for tissue in tissues:
        if not isinstance(tissue, dict) or not {"name", "chi_ppm"} <= tissue.keys():
            raise MriReconError(f"{where}: each tissue needs 'name' and 'chi_ppm': {tissue!r}")
        tissue_names.add(tissue["name"])
    shapes = definition["shapes"]
    if not isinstance(shapes, list) or not shapes:
        raise MriReconError(f"{where}: 'shapes' must be a non-empty list")
    for shape in shapes:
        label = f"{where}: shape {shape.get('name', '?')!r}" if isinstance(shape, dict) else where
        if not isinstance(shape, dict) or shape.get("type") not in _SHAPE_TYPES:
            raise MriReconError(f"{label}: 'type' must be one of {', '.join(_SHAPE_TYPES)}")
        if shape.get("tissue") not in tissue_names:
            raise MriReconError(f"{label}: unknown tissue {shape.get('tissue')!r}")
        if shape["type"] == "tube":
            _vec3(shape.get("start_mm"), f"{label}: start_mm")
            _vec3(shape.get("end_mm"), f"{label}: end_mm")
        else:
            _vec3(shape.get("centre_mm"), f"{label}: centre_mm")
        if shape["type"] == "ellipsoid":
            _vec3(shape.get("semi_axes_mm"), f"{label}: semi_axes_mm", positive=True)
        elif not float(shape.get("radius_mm", 0)) > 0:
            raise MriReconError(f"{label}: radius_mm must be positive")


def _half_extent_mm(shape: dict) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounding box (low, high) of a shape in mm."""
    if shape["type"] == "tube":
        a = np.asarray(shape["start_mm"], float)
        b = np.asarray(shape["end_mm"], float)
        r = float(shape["radius_mm"])
        return np.minimum(a, b) - r, np.maximum(a, b) + r
    c = np.asarray(shape["centre_mm"], float)
    if shape["type"] == "sphere":
        half = np.full(3, float(shape["radius_mm"]))
    else:
        ax, ay, az = (float(v) for v in shape["semi_axes_mm"])
        t = math.radians(float(shape.get("rotation_z_deg", 0.0)))
        half = np.array(
            [
                math.hypot(ax * math.cos(t), ay * math.sin(t)),
                math.hypot(ax * math.sin(t), ay * math.cos(t)),
                az,
            ]
        )
    return c - half, c + half


def _inside(shape: dict, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Boolean membership of voxel centres given as open-grid coordinates (mm)."""
    kind = shape["type"]
    if kind == "tube":
        a = np.asarray(shape["start_mm"], float)
        b = np.asarray(shape["end_mm"], float)
        r = float(shape["radius_mm"])
        axis = b - a
        length2 = float(axis @ axis)
        dx, dy, dz = x - a[0], y - a[1], z - a[2]
        along = dx * axis[0] + dy * axis[1] + dz * axis[2]
        dist2 = dx * dx + dy * dy + dz * dz
        if length2 == 0.0:
            return dist2 <= r * r
        # Inside the segment's slab and within r of its axis.
        perp2 = dist2 - along * along / length2
        return (along >= 0.0) & (along <= length2) & (perp2 <= r * r)
    c = shape["centre_mm"]
    if kind == "sphere":
        r = float(shape["radius_mm"])
        ax = ay = az = r
    else:
        ax, ay, az = (float(v) for v in shape["semi_axes_mm"])
    dx, dy, dz = x - c[0], y - c[1], z - c[2]
    t = math.radians(float(shape.get("rotation_z_deg", 0.0)))
    if t:
        cos_t, sin_t = math.cos(t), math.sin(t)
        u = cos_t * dx + sin_t * dy  # coordinates in the shape's own (rotated) frame
        v = -sin_t * dx + cos_t * dy
        q = (u / ax) ** 2 + (v / ay) ** 2
    else:
        q = (dx / ax) ** 2 + (dy / ay) ** 2
    return q + (dz / az) ** 2 <= 1.0


def _parse_shape(shape: Any) -> tuple[int, int, int]:
    if isinstance(shape, (int, np.integer)) or isinstance(shape, str):
        raise InvalidParameterError(f"shape must be three positive integers (x, y, z), got {shape!r}")
    try:
        dims = tuple(shape)
    except TypeError:
        dims = ()
    if len(dims) != 3 or not all(
        isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0 for n in dims
    ):
        raise InvalidParameterError(f"shape must be three positive integers (x, y, z), got {shape!r}")
    return tuple(int(n) for n in dims)


def _parse_voxel_size(voxel_size_mm: Any) -> tuple[float, float, float]:
    if np.ndim(voxel_size_mm) == 0:
        voxel_size_mm = (voxel_size_mm,) * 3
    try:
        sizes = tuple(float(v) for v in voxel_size_mm)
    except (TypeError, ValueError):
        sizes = ()
    if len(sizes) != 3 or not all(math.isfinite(v) and v > 0 for v in sizes):
        raise InvalidParameterError(
            f"voxel_size_mm must be a positive number or three positive numbers, got {voxel_size_mm!r}"
        )
    return sizes


def head_phantom(
    shape: tuple[int, int, int] = (128, 128, 128),
    *,
    voxel_size_mm: float | tuple[float, float, float] | None = None,
    dtype: Any = np.float32,
) -> HeadPhantom:
    """Rasterise the head susceptibility phantom defined in ``phantoms/head.json``.

    Parameters
    ----------
    shape : tuple of int, optional
        Grid size (x, y, z). Any sizes, odd or even.
    voxel_size_mm : float or tuple of float, optional
        Voxel size in mm (one number for isotropic voxels). ``None`` (default) spreads the
        definition's field of view (``fov_mm``, 192 mm per axis for ``head``) over
        ``shape``. When given, the field of view is ``shape * voxel_size_mm``; the head
        keeps its size in mm either way.
    dtype : numpy dtype, optional
        Floating dtype of ``chi`` (float32 default, float64 on request). The geometry
        (labels, mask) is computed in float64 and does not depend on it.

    Returns
    -------
    HeadPhantom
        ``chi`` (ppm, CSF = 0, 0 outside the brain), ``mask``, ``labels``,
        ``label_names`` and ``voxel_size_mm``.

    Raises
    ------
    InvalidParameterError
        If ``shape``, ``voxel_size_mm`` or ``dtype`` is malformed, or the brain does not
        fit in the field of view.

    Notes
    -----
    Shapes are painted in the order of the definition (later ones overwrite earlier
    ones) and clipped to the first shape, the brain outline, so ``mask`` is exactly
    that ellipsoid. A voxel takes a shape's tissue when its centre lies inside the
    shape; voxel ``i`` along an axis of ``n`` voxels of size ``d`` is centred at
    ``(i - (n - 1) / 2) * d`` mm (symmetric about the volume centre). Each shape is
    evaluated with numpy broadcasting over open grids restricted to its bounding box.

    Examples
    --------
    >>> ph = head_phantom((64, 64, 64))
    >>> ph.chi.shape, ph.chi.dtype
    ((64, 64, 64), dtype('float32'))
    """
    dims = _parse_shape(shape)
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise InvalidParameterError(f"dtype must be a real floating dtype, got {dtype!r}") from exc
    if dtype.kind != "f":
        raise InvalidParameterError(f"dtype must be a real floating dtype (float32/float64), got {dtype}")
    definition = load_definition("head")
    if voxel_size_mm is None:
        fov = _vec3(definition["fov_mm"], "fov_mm", positive=True)
        voxel = tuple(f / n for f, n in zip(fov, dims, strict=True))
    else:
        voxel = _parse_voxel_size(voxel_size_mm)

    shapes = definition["shapes"]
    tissue_names = [t["name"] for t in definition["tissues"]]
    label_of = {name: i + 1 for i, name in enumerate(tissue_names)}

    # The brain outline (first shape) must lie inside the field of view.
    low, high = _half_extent_mm(shapes[0])
    half_fov = np.array([n * d / 2.0 for n, d in zip(dims, voxel, strict=True)])
    if np.any(low < -half_fov) or np.any(high > half_fov):
        extent = " x ".join(f"{v:g}" for v in (high - low))
        fov_txt = " x ".join(f"{2 * v:g}" for v in half_fov)
        raise InvalidParameterError(
            f"the brain ({extent} mm) does not fit in the field of view shape * voxel_size_mm = "
            f"{fov_txt} mm; use more voxels or larger voxel_size_mm"
        )

    # Voxel-centre coordinates along each axis (mm), float64.
    coords = [(np.arange(n) - (n - 1) / 2.0) * d for n, d in zip(dims, voxel, strict=True)]
    labels = np.zeros(dims, dtype=np.uint8)
    outline = np.zeros(dims, dtype=bool)
    for k, shp in enumerate(shapes):
        lo, hi = _half_extent_mm(shp)
        box = []
        for axis in range(3):
            n, d = dims[axis], voxel[axis]
            i0 = max(math.floor(lo[axis] / d + (n - 1) / 2.0) - 1, 0)
            i1 = min(math.ceil(hi[axis] / d + (n - 1) / 2.0) + 1, n - 1)
            box.append(slice(i0, i1 + 1) if i1 >= i0 else slice(0, 0))
        box = tuple(box)
        if any(s.stop <= s.start for s in box):
            continue
        x = coords[0][box[0], None, None]
        y = coords[1][None, box[1], None]
        z = coords[2][None, None, box[2]]
        inside = np.broadcast_to(_inside(shp, x, y, z), labels[box].shape)
        if k == 0:
            outline[box] = inside
        else:
            inside = inside & outline[box]
        labels[box][inside] = label_of[shp["tissue"]]

    chi_table = np.array([0.0] + [float(t["chi_ppm"]) for t in definition["tissues"]], dtype=dtype)
    chi = chi_table[labels]
    return HeadPhantom(
        chi=chi,
        mask=labels > 0,
        labels=labels,
        label_names=("background", *tissue_names),
        voxel_size_mm=tuple(float(d) for d in voxel),
    )


def simulate_field(
    chi,
    *,
    voxel_size_mm=(1.0, 1.0, 1.0),
    b0_dir=(0.0, 0.0, 1.0),
    mask=None,
    noise_ppm=0.0,
    seed=None,
    pad_factor=1.5,
    supersample=1,
):
    """Field (ppm) that a susceptibility distribution produces, with optional noise.

    Parameters
    ----------
    chi : ndarray, (x, y, z)
        Susceptibility in ppm.
    voxel_size_mm : float or 3 floats
    b0_dir : 3 floats
        B0 direction in voxel axes.
    mask : ndarray of bool, optional
        If given, noise is added and the field kept only inside it (zero outside).
    noise_ppm : float
        Standard deviation of white Gaussian noise added to the field, ppm.
    seed : int or numpy.random.Generator, optional
        For the noise.
    pad_factor : float
        The convolution runs on a zero-padded grid of at least ``pad_factor``
        times the size per axis (rounded up to FFT-friendly sizes), so the
        field has (almost) no wrap-around: it differs from the periodic model
        the closed-form inversion assumes, as measured data do.
    supersample : int
        1 (default): the dipole convolution on the voxel grid itself. s > 1: the
        field that the same voxelised χ produces on a grid s times finer per
        axis (each voxel split into s³ equal sub-voxels), averaged back over
        each voxel, as a scanner's voxel averages a continuous field; computed
        on the voxel grid with the equivalent kernel (no fine grid is built).
        With B0 oblique to the grid, s = 1 puts a non-harmonic component into
        the field outside the sources, on the grid's highest frequencies, that
        does not fade with the distance from them; s = 2 removes it.

    Returns
    -------
    ndarray, float32 (float64 for float64 ``chi``), same shape as ``chi``.

    Notes
    -----
    ``field = F⁻¹ D F chi`` on the padded grid, with the dipole kernel of
    :func:`mrirecon.kspace.dipole_kernel`, or for ``supersample`` s the kernel
    ``Σ_j w_j(k) D(k + j/Δ)`` summed over the s³ frequencies ``k + j/Δ`` of the
    fine grid that fold onto k, with ``w_j = Π_i [sin(π s f_i) / (s sin(π f_i))]²``,
    ``f_i = (k_i + j_i/Δ_i) Δ_i / s`` (splitting into sub-voxels and averaging
    back, in the frequency domain; Σ_j w_j = 1, and the kernel stays even). Transforms are planned with
    ``FFTW_ESTIMATE``: a one-off transform gains nothing from measuring a plan.
    """
    from .. import fft
    from ..kspace import dipole_kernel

    chi = np.asarray(chi)
    if chi.ndim != 3:
        raise InvalidParameterError(f"chi must be a 3-D volume (x, y, z), got shape {chi.shape}")
    if not np.isfinite(noise_ppm) or noise_ppm < 0:
        raise InvalidParameterError(f"noise_ppm must be >= 0, got {noise_ppm!r}")
    if not np.isfinite(pad_factor) or pad_factor < 1:
        raise InvalidParameterError(f"pad_factor must be >= 1, got {pad_factor!r}")
    if seed is not None and not isinstance(seed, np.random.Generator):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InvalidParameterError(f"seed must be a non-negative integer or a Generator, got {seed!r}")
    if (
        isinstance(supersample, bool)
        or not isinstance(supersample, (int, np.integer))
        or not 1 <= supersample <= 4
    ):
        raise InvalidParameterError(f"supersample must be an integer from 1 to 4, got {supersample!r}")
    dtype = np.float64 if chi.dtype == np.float64 else np.float32
    big = tuple(fft.next_fast_len(math.ceil(n * pad_factor)) for n in chi.shape)
    padded = np.zeros(big, dtype=dtype)
    padded[tuple(slice(0, n) for n in chi.shape)] = chi
    if supersample == 1:
        kernel = dipole_kernel(big, voxel_size_mm=voxel_size_mm, b0_dir=b0_dir, half=True, dtype=dtype)
    else:
        from ..kspace import normalize_direction, normalize_voxel_size

        vx, bd = normalize_voxel_size(voxel_size_mm, 3), normalize_direction(b0_dir)
        kernel = _averaged_dipole(big, vx, bd, int(supersample), np.dtype(dtype).name)
    with fft.planning("FFTW_ESTIMATE"):
        field = fft.real_filter(padded, kernel)
    del padded
    field = np.ascontiguousarray(field[tuple(slice(0, n) for n in chi.shape)])
    if noise_ppm > 0:
        rng = np.random.default_rng(seed)
        field += dtype(noise_ppm) * rng.standard_normal(field.shape, dtype=dtype)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != field.shape:
            raise InvalidParameterError(f"mask shape {mask.shape} does not match chi shape {chi.shape}")
        field *= mask
    return field


@functools.lru_cache(maxsize=2)  # a phantom's total and local fields share one
def _averaged_dipole(shape, vox, b, s, dtype):
    """Half-spectrum kernel of: split each voxel into s³ sub-voxels, dipole field, voxel average."""
    from ..kspace import frequency_grid

    dtype_type = np.dtype(dtype).type
    # per axis: the s fine-grid frequencies k + j/Δ in [-s/2Δ, s/2Δ) that fold onto k, and their weights
    axes = []
    for f, d in zip(frequency_grid(shape, voxel_size_mm=vox, half=True), vox, strict=True):
        terms = []
        for j in range(-s, s + 1):
            kj = f + j / d
            inside = (kj >= -s / (2 * d) - 1e-12) & (kj < s / (2 * d) - 1e-12)
            if not inside.any():
                continue
            u = kj * d / s  # cycles per fine voxel
            with np.errstate(invalid="ignore", divide="ignore"):
                w = np.where(np.abs(u) < 1e-12, 1.0, np.sin(np.pi * s * u) / (s * np.sin(np.pi * u))) ** 2
            terms.append((kj, np.where(inside, w, 0.0)))
        axes.append(terms)
    full = tuple(np.broadcast_shapes(*(t[0][0].shape for t in axes)))
    out = np.zeros(full, dtype=dtype)
    k2 = np.empty(full, dtype=dtype)
    kb = np.empty(full, dtype=dtype)
    for kx, wx in axes[0]:
        for ky, wy in axes[1]:
            for kz, wz in axes[2]:
                # D = 1/3 - (k.b)²/|k|² at the fine frequency, weighted; in place, in the kernel's dtype
                np.add(kx * kx + ky * ky, kz * kz, out=k2, casting="unsafe")
                np.add(kx * b[0] + ky * b[1], kz * b[2], out=kb, casting="unsafe")
                k2[k2 == 0] = np.inf  # only k = 0 itself: D(0) = 0 is set below
                kb *= kb
                kb /= k2
                kb -= dtype_type(1.0 / 3.0)  # -D
                w = (wx * wy).astype(dtype) * wz.astype(dtype)
                kb *= w
                out -= kb
    out[0, 0, 0] = 0.0
    out.flags.writeable = False
    return out


#: Relative proton density of each tissue (for the simulated magnitude), and R2* in 1/s.
TISSUE_M0 = {
    "cortical_grey_matter": 0.85,
    "white_matter": 0.7,
    "csf": 1.0,
    "caudate": 0.75,
    "putamen": 0.75,
    "globus_pallidus": 0.65,
    "thalamus": 0.75,
    "red_nucleus": 0.65,
    "substantia_nigra": 0.65,
    "dentate_nucleus": 0.65,
    "vein": 0.5,
    "calcification": 0.2,
}
