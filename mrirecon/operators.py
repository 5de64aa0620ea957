"""Linear operators for the iterative methods: forward, adjoint and normal, side by side.

An :class:`Operator` maps arrays of ``shape_in`` to arrays of ``shape_out``.
``A @ B`` composes, ``A.H`` is the adjoint, ``A.normal(x)`` is ``Aᴴ A x`` (an
operator can override it with something cheaper: the dipole operator's
normal is one two-FFT filter by D²). Every operator here passes
:func:`mrirecon.testing.dot_test`. Arrays can be NumPy or CuPy; results come
back in the input's module.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidParameterError, ShapeMismatchError
from .fft import get_array_module, real_filter
from .kspace import dipole_kernel, normalize_direction, normalize_voxel_size, xp_name

__all__ = ["Compose", "Diagonal", "Dipole", "Gradient", "Operator"]


class Operator:
    """A linear map from ``shape_in`` to ``shape_out``.

    Subclasses implement ``_forward`` and ``_adjoint``; the public methods check
    shapes so a mistake names the operator and the shapes involved.
    """

    def __init__(self, shape_in, shape_out, dtype=np.float32):
        self.shape_in = tuple(int(n) for n in shape_in)
        self.shape_out = tuple(int(n) for n in shape_out)
        self.dtype = np.dtype(dtype)

    def __repr__(self):
        return f"{type(self).__name__}({self.shape_in} -> {self.shape_out}, {self.dtype})"

    def _check(self, x, shape, what):
        if tuple(x.shape) != shape:
            raise ShapeMismatchError(
                f"{type(self).__name__}.{what}: expected shape {shape}, got {tuple(x.shape)}"
            )

    def forward(self, x):
        """``A x``."""
        self._check(x, self.shape_in, "forward")
        return self._forward(x)

    def adjoint(self, y):
        """``Aᴴ y``."""
        self._check(y, self.shape_out, "adjoint")
        return self._adjoint(y)

    def normal(self, x):
        """``Aᴴ A x``."""
        self._check(x, self.shape_in, "normal")
        return self._normal(x)

    def _normal(self, x):
        return self._adjoint(self._forward(x))

    @property
    def H(self) -> Operator:
        """The adjoint operator."""
        return _Adjoint(self)

    def __matmul__(self, other: Operator) -> Operator:
        return Compose(self, other)


class _Adjoint(Operator):
    def __init__(self, op):
        super().__init__(op.shape_out, op.shape_in, op.dtype)
        self.op = op

    def __repr__(self):
        return f"{self.op!r}.H"

    def _check(self, x, shape, what):
        if tuple(x.shape) != shape:
            raise ShapeMismatchError(
                f"{type(self.op).__name__}.H.{what}: expected shape {shape}, got {tuple(x.shape)}"
            )

    def _forward(self, x):
        return self.op._adjoint(x)

    def _adjoint(self, y):
        return self.op._forward(y)

    @property
    def H(self):
        return self.op


class Compose(Operator):
    """``A @ B``: apply ``B`` then ``A``."""

    def __init__(self, a: Operator, b: Operator):
        if b.shape_out != a.shape_in:
            raise ShapeMismatchError(f"cannot compose {a!r} after {b!r}: {b.shape_out} != {a.shape_in}")
        super().__init__(b.shape_in, a.shape_out, np.result_type(a.dtype, b.dtype))
        self.a, self.b = a, b

    def _forward(self, x):
        return self.a._forward(self.b._forward(x))

    def _adjoint(self, y):
        return self.b._adjoint(self.a._adjoint(y))


class Dipole(Operator):
    """Periodic dipole convolution ``F⁻¹ D F`` (real to real, self-adjoint).

    Parameters
    ----------
    shape : 3 ints
    voxel_size_mm, b0_dir
        As in :func:`mrirecon.kspace.dipole_kernel`.
    dtype : float32 or float64
    xp : ``"numpy"`` or ``"cupy"`` (or the module)
        Array module of :attr:`kernel`, built now. The operator also takes
        arrays of the other module: their kernel is built (once, on their
        device) at the first call.

    Notes
    -----
    ``forward = adjoint`` (D is real and even); ``normal`` filters once by
    ``D²`` (two FFTs instead of four). The kernels are built once and cached.
    """

    def __init__(
        self, shape, *, voxel_size_mm=(1.0, 1.0, 1.0), b0_dir=(0.0, 0.0, 1.0), dtype=np.float32, xp="numpy"
    ):
        super().__init__(shape, shape, dtype)
        self.voxel_size_mm = normalize_voxel_size(voxel_size_mm)
        self.b0_dir = normalize_direction(b0_dir)
        self._kernels = {}
        self.kernel, self.kernel_sq = self._kernels_for(xp_name(xp))

    def _kernels_for(self, name):
        """``(D, D²)`` in the half-spectrum layout, on module ``name`` (built at the first use)."""
        hit = self._kernels.get(name)
        if hit is None:
            d = dipole_kernel(
                self.shape_in,
                voxel_size_mm=self.voxel_size_mm,
                b0_dir=self.b0_dir,
                half=True,
                dtype=self.dtype,
                xp=name,
            )
            d2 = d * d
            if isinstance(d2, np.ndarray):
                d2.setflags(write=False)
            hit = self._kernels[name] = (d, d2)
        return hit

    def _forward(self, x):
        return real_filter(x, self._kernels_for(get_array_module(x).__name__)[0])

    _adjoint = _forward

    def _normal(self, x):
        return real_filter(x, self._kernels_for(get_array_module(x).__name__)[1])


class Gradient(Operator):
    """Circular forward differences along each axis: ``(∇x)[i] = x[r + e_i] − x[r]``.

    Maps ``shape`` to ``(ndim, *shape)``; unitless (no division by the voxel
    size), matching :func:`mrirecon.kspace.gradient_sq_kernel`. The adjoint is
    minus the backward-difference divergence.
    """

    def __init__(self, shape, dtype=np.float32):
        shape = tuple(int(n) for n in shape)
        super().__init__(shape, (len(shape), *shape), dtype)

    def _forward(self, x):
        xp = get_array_module(x)
        out = xp.empty((x.ndim, *x.shape), dtype=x.dtype)
        for axis in range(x.ndim):
            # x[r + e_i] - x[r] by slicing (no rolled copy): the interior, then the wrap-around
            lo = [slice(None)] * x.ndim
            hi = [slice(None)] * x.ndim
            lo[axis], hi[axis] = slice(0, -1), slice(1, None)
            o = out[axis]
            xp.subtract(x[tuple(hi)], x[tuple(lo)], out=o[tuple(lo)])
            first, last = list(lo), list(lo)
            first[axis], last[axis] = slice(0, 1), slice(-1, None)
            xp.subtract(x[tuple(first)], x[tuple(last)], out=o[tuple(last)])
        return out

    def _adjoint(self, y):
        # -(backward-difference divergence): out[r] = sum_i y_i[r - e_i] - y_i[r]
        xp = get_array_module(y)
        out = xp.negative(y[0])
        for axis in range(y.shape[0]):
            if axis:
                out -= y[axis]
            lo = [slice(None)] * (y.ndim - 1)
            hi = [slice(None)] * (y.ndim - 1)
            lo[axis], hi[axis] = slice(0, -1), slice(1, None)
            out[tuple(hi)] += y[axis][tuple(lo)]
            first, last = list(lo), list(lo)
            first[axis], last[axis] = slice(0, 1), slice(-1, None)
            out[tuple(first)] += y[axis][tuple(last)]
        return out


class Diagonal(Operator):
    """Voxel-wise multiplication by real ``weights`` (a mask, magnitude or noise weights); self-adjoint.

    The operator works on arrays of the weights' module (NumPy or CuPy); an
    array of the other module raises rather than being copied.
    """

    def __init__(self, weights, dtype=None):
        xp = get_array_module(weights)
        weights = xp.asarray(weights)
        dtype = (
            np.dtype(dtype)
            if dtype is not None
            else (np.float64 if weights.dtype == np.float64 else np.float32)
        )
        super().__init__(weights.shape, weights.shape, dtype)
        self.weights = weights.astype(dtype, copy=False)

    def _same_module(self, x):
        if get_array_module(x) is not get_array_module(self.weights):
            raise InvalidParameterError(
                f"Diagonal: the weights are a {get_array_module(self.weights).__name__} array but the "
                f"input is a {get_array_module(x).__name__} array; build the operator from weights on "
                "the input's device (mrirecon.device.to_device)"
            )

    def _forward(self, x):
        self._same_module(x)
        return x * self.weights

    _adjoint = _forward

    def _normal(self, x):
        self._same_module(x)
        return x * (self.weights * self.weights)
