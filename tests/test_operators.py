"""Linear operators: adjoints by the dot test, forward/normal against NumPy references, shape errors."""

import numpy as np
import pytest

from mrirecon.device import to_numpy
from mrirecon.errors import InvalidParameterError, ShapeMismatchError
from mrirecon.fft import real_filter
from mrirecon.kspace import dipole_kernel, gradient_sq_kernel
from mrirecon.operators import Compose, Diagonal, Dipole, Gradient, Operator
from mrirecon.testing import dot_test

REAL = [np.float32, np.float64]
COMPLEX = [np.complex64, np.complex128]

DIPOLE_CASES = [
    ((6, 5, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 1.0)),
    ((7, 5, 9), (1.0, 1.0, 1.0), (0.0, 0.0, 1.0)),  # all odd
    ((8, 8, 8), (1.0, 1.0, 1.0), (0.3, 0.2, 1.0)),  # even sizes with an oblique B0: Nyquist planes matter
    ((5, 6, 7), (1.0, 1.2, 2.0), (-0.2, 0.5, 0.8)),  # anisotropic voxels, oblique B0
]
GRADIENT_SHAPES = [(7, 6), (5, 5), (4, 5, 6), (3, 7, 2)]


def _random(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def _weights(shape, seed=1):
    return np.random.default_rng(seed).uniform(0.0, 2.0, shape)


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


# ---------------------------------------------------------------- dot tests
@pytest.mark.parametrize("dtype", REAL)
@pytest.mark.parametrize(("shape", "vox", "b"), DIPOLE_CASES)
def test_dipole_passes_dot_test(shape, vox, b, dtype, xp):
    op = Dipole(shape, voxel_size_mm=vox, b0_dir=b, dtype=dtype, xp=xp)
    dot_test(op, seed=1, xp=xp)
    dot_test(op.H, seed=2, xp=xp)


@pytest.mark.parametrize("dtype", REAL + COMPLEX)
@pytest.mark.parametrize("shape", GRADIENT_SHAPES)
def test_gradient_passes_dot_test(shape, dtype, xp):
    real = np.float32 if dtype in (np.float32, np.complex64) else np.float64
    op = Gradient(shape, dtype=real)
    assert op.shape_out == (len(shape), *shape)
    dot_test(op, seed=3, dtype=dtype, xp=xp)
    dot_test(op.H, seed=4, dtype=dtype, xp=xp)


@pytest.mark.parametrize("dtype", REAL + COMPLEX)
def test_diagonal_passes_dot_test(dtype, xp):
    real = np.float32 if dtype in (np.float32, np.complex64) else np.float64
    op = Diagonal(xp.asarray(_weights((5, 4, 3))), dtype=real)
    dot_test(op, seed=5, dtype=dtype, xp=xp)
    dot_test(op.H, seed=6, dtype=dtype, xp=xp)


@pytest.mark.parametrize("dtype", REAL)
@pytest.mark.parametrize(("shape", "vox", "b"), DIPOLE_CASES[1:3])
def test_compositions_pass_dot_test(shape, vox, b, dtype, xp, assert_on):
    dip = Dipole(shape, voxel_size_mm=vox, b0_dir=b, dtype=dtype, xp=xp)
    grad = Gradient(shape, dtype=dtype)
    diag = Diagonal(xp.asarray(_weights(shape)), dtype=dtype)
    chain3 = grad @ diag @ dip
    assert isinstance(chain3, Compose)
    assert (chain3.shape_in, chain3.shape_out) == (shape, (3, *shape))
    for op in (chain3, chain3.H, dip @ grad.H, grad.H @ grad, diag @ dip @ diag, (grad @ dip).H @ grad):
        dot_test(op, seed=7, xp=xp)
    # the adjoint of a composition is the reversed composition of adjoints
    y = xp.asarray(_random((3, *shape), dtype, seed=8))
    out = chain3.adjoint(y)
    assert_on(out)
    np.testing.assert_allclose(
        to_numpy(out),
        to_numpy(dip.H.forward(diag.H.forward(grad.H.forward(y)))),
        rtol=1e-5,
        atol=1e-6,
    )
    assert chain3.H.H is chain3


def test_dipole_follows_the_input_module(xp, assert_on):
    # built for NumPy (the default), applied to arrays of either module: the kernel is built
    # on the input's device at the first call, and the result stays there
    shape = (6, 5, 4)
    op = Dipole(shape, b0_dir=(0.3, 0.2, 1.0), dtype=np.float64)
    x = _random(shape, np.float64, seed=20)
    for method in (op.forward, op.adjoint, op.normal):
        out = method(xp.asarray(x))
        assert_on(out)
        np.testing.assert_allclose(to_numpy(out), method(x), rtol=1e-12, atol=1e-14)
    dot_test(op, seed=21, xp=xp)


@pytest.mark.gpu
def test_diagonal_rejects_arrays_of_the_other_module(xp):
    if xp is np:
        pytest.skip("needs two array modules")
    op = Diagonal(_weights((5, 4, 3)))  # NumPy weights
    with pytest.raises(InvalidParameterError, match="Diagonal.*numpy.*cupy"):
        op.forward(xp.ones((5, 4, 3)))
    with pytest.raises(InvalidParameterError, match="Diagonal"):
        Diagonal(xp.asarray(_weights((5, 4, 3)))).normal(np.ones((5, 4, 3)))


def test_dot_test_rejects_results_on_another_module(xp):
    class HostOnly(Operator):
        def __init__(self):
            super().__init__((4, 3), (4, 3), np.float64)

        def _forward(self, x):
            return np.ones((4, 3))  # ignores the input's module

        _adjoint = _forward

    if xp is np:
        dot_test(Gradient((4, 3), dtype=np.float64), xp=xp)  # the check passes on one module
        return
    with pytest.raises(AssertionError, match="forward returned a numpy"):
        dot_test(HostOnly(), xp=xp)


# ---------------------------------------------------------------- dot_test can fail
class _DipoleDoubleAdjoint(Dipole):
    def _adjoint(self, y):
        return 2 * self._forward(y)


class _GradientTransposedRoll(Gradient):
    def _adjoint(self, y):  # rolls the wrong way: the adjoint of backward, not forward, differences
        out = np.zeros(y.shape[1:], dtype=y.dtype)
        for axis in range(y.shape[0]):
            out += np.roll(y[axis], -1, axis=axis)
            out -= y[axis]
        return out


class _DipoleWrongNormal(Dipole):
    def _normal(self, x):  # D instead of D^2: the adjoint is right, the normal is not
        return real_filter(x, self.kernel)


class _DiagonalConjugateMissing(Operator):
    """Multiplication by a complex phase whose 'adjoint' forgets the conjugate."""

    def __init__(self, shape):
        super().__init__(shape, shape, np.float64)
        self.phase = np.exp(1j * np.random.default_rng(0).uniform(0, 2 * np.pi, shape))

    def _forward(self, x):
        return x * self.phase

    _adjoint = _forward


@pytest.mark.parametrize(
    ("op", "dtype", "message"),
    [
        (_DipoleDoubleAdjoint((6, 5, 4), dtype=np.float64), None, "<Ax, y>"),
        (_DipoleDoubleAdjoint((6, 5, 4), dtype=np.float32), None, "<Ax, y>"),
        (_GradientTransposedRoll((6, 5, 4), dtype=np.float64), None, "<Ax, y>"),
        (_GradientTransposedRoll((7, 6), dtype=np.float32), None, "<Ax, y>"),
        (_DipoleWrongNormal((6, 5, 4), dtype=np.float64), None, "normal"),
        (_DiagonalConjugateMissing((4, 5)), np.complex128, "<Ax, y>"),
    ],
)
def test_dot_test_catches_wrong_adjoint(op, dtype, message):
    with pytest.raises(AssertionError, match=message):
        dot_test(op, seed=0, dtype=dtype)


def test_dot_test_returns_small_mismatch(xp):
    err64 = dot_test(Dipole((6, 5, 4), b0_dir=(0.3, 0.2, 1.0), dtype=np.float64), xp=xp)
    err32 = dot_test(Dipole((6, 5, 4), b0_dir=(0.3, 0.2, 1.0), dtype=np.float32), xp=xp)
    assert 0 <= err64 < 1e-13
    # cuFFT's single-precision transforms may round differently from FFTW's: 1e-5 there
    assert 0 <= err32 < (1e-6 if xp is np else 1e-5)


# ---------------------------------------------------------------- against NumPy
@pytest.mark.parametrize(("shape", "vox", "b"), DIPOLE_CASES)
def test_dipole_forward_is_numpy_fft_filter(shape, vox, b, xp, assert_on):
    x = _random(shape, np.float64, seed=9)
    d = dipole_kernel(shape, voxel_size_mm=vox, b0_dir=b, half=False, dtype=np.float64)
    assert d.shape == shape
    ref = np.real(np.fft.ifftn(d * np.fft.fftn(x)))
    op = Dipole(shape, voxel_size_mm=vox, b0_dir=b, dtype=np.float64, xp=xp)
    xd = xp.asarray(x)
    fwd, adj, nor = op.forward(xd), op.adjoint(xd), op.normal(xd)
    assert_on(fwd, adj, nor)
    assert _rel(to_numpy(fwd), ref) < 1e-12
    assert _rel(to_numpy(adj), ref) < 1e-12
    assert _rel(to_numpy(nor), to_numpy(op.forward(op.forward(xd)))) < 1e-12
    ref2 = np.real(np.fft.ifftn(d * d * np.fft.fftn(x)))
    assert _rel(to_numpy(nor), ref2) < 1e-12
    op32 = Dipole(shape, voxel_size_mm=vox, b0_dir=b, dtype=np.float32, xp=xp)
    x32 = xp.asarray(x.astype(np.float32))
    assert _rel(to_numpy(op32.forward(x32)), ref) < 1e-5
    assert _rel(to_numpy(op32.normal(x32)), ref2) < 1e-5


@pytest.mark.parametrize("shape", GRADIENT_SHAPES)
def test_gradient_forward_is_roll_differences(shape, xp, assert_on):
    x = _random(shape, np.float64, seed=10)
    out = Gradient(shape, dtype=np.float64).forward(xp.asarray(x))
    assert_on(out)
    ref = np.stack([np.roll(x, -1, axis=a) - x for a in range(len(shape))])
    np.testing.assert_allclose(to_numpy(out), ref, rtol=0, atol=1e-14)
    # adjoint: minus the backward-difference divergence
    y = _random((len(shape), *shape), np.float64, seed=11)
    div = sum(y[a] - np.roll(y[a], 1, axis=a) for a in range(len(shape)))
    adj = Gradient(shape, dtype=np.float64).adjoint(xp.asarray(y))
    assert_on(adj)
    np.testing.assert_allclose(to_numpy(adj), -div, rtol=0, atol=1e-13)


@pytest.mark.parametrize("shape", GRADIENT_SHAPES)
def test_gradient_normal_has_symbol_gradient_sq_kernel(shape, xp, assert_on):
    x = _random(shape, np.float64, seed=12)
    g = gradient_sq_kernel(shape, half=False, dtype=np.float64)
    ref = np.real(np.fft.ifftn(g * np.fft.fftn(x)))
    op = Gradient(shape, dtype=np.float64)
    out = op.normal(xp.asarray(x))
    assert_on(out)
    assert _rel(to_numpy(out), ref) < 1e-12


def test_diagonal_forward_and_normal(xp, assert_on):
    w = _weights((5, 4, 3))
    x = _random((5, 4, 3), np.float64, seed=13)
    op = Diagonal(xp.asarray(w))
    assert op.dtype == np.float64
    fwd, nor = op.forward(xp.asarray(x)), op.normal(xp.asarray(x))
    assert_on(fwd, nor)
    np.testing.assert_allclose(to_numpy(fwd), w * x, rtol=1e-15)
    np.testing.assert_allclose(to_numpy(nor), w * w * x, rtol=1e-15)
    assert Diagonal(xp.asarray(w.astype(np.float32))).dtype == np.float32


# ---------------------------------------------------------------- shapes and dtypes
def test_wrong_shapes_raise_naming_the_operator():
    dip = Dipole((6, 5, 4))
    grad = Gradient((6, 5, 4))
    diag = Diagonal(np.ones((6, 5, 4)))
    bad = np.zeros((6, 5, 5), np.float32)
    with pytest.raises(ShapeMismatchError, match=r"Dipole\.forward.*\(6, 5, 4\).*\(6, 5, 5\)"):
        dip.forward(bad)
    with pytest.raises(ShapeMismatchError, match=r"Dipole\.adjoint"):
        dip.adjoint(bad)
    with pytest.raises(ShapeMismatchError, match=r"Dipole\.normal"):
        dip.normal(bad)
    with pytest.raises(ShapeMismatchError, match=r"Gradient\.forward"):
        grad.forward(bad)
    with pytest.raises(ShapeMismatchError, match=r"Gradient\.adjoint.*\(3, 6, 5, 4\)"):
        grad.adjoint(np.zeros((6, 5, 4), np.float32))
    with pytest.raises(ShapeMismatchError, match=r"Diagonal\.forward"):
        diag.forward(bad)
    with pytest.raises(ShapeMismatchError, match=r"Compose\.forward"):
        (grad @ dip).forward(bad)
    with pytest.raises(ShapeMismatchError, match=r"Compose\.adjoint"):
        (grad @ dip).adjoint(np.zeros((6, 5, 4), np.float32))
    with pytest.raises(ShapeMismatchError):
        grad.H.forward(bad)


def test_adjoint_shape_error_names_the_wrapped_operator():
    with pytest.raises(ShapeMismatchError, match="Gradient"):
        Gradient((6, 5, 4)).H.forward(np.zeros((6, 5, 4), np.float32))


def test_composing_mismatched_operators_raises():
    dip = Dipole((6, 5, 4))
    grad = Gradient((6, 5, 4))
    with pytest.raises(ShapeMismatchError, match=r"\(3, 6, 5, 4\) != \(6, 5, 4\)"):
        dip @ grad
    with pytest.raises(ShapeMismatchError):
        Dipole((6, 5, 5)) @ Dipole((6, 5, 4))
    with pytest.raises(ShapeMismatchError):
        Compose(grad, grad)
    with pytest.raises(ShapeMismatchError):
        grad.H @ Gradient((2, 3))


@pytest.mark.parametrize("dtype", REAL)
def test_dtype_is_preserved(dtype, xp, assert_on):
    shape = (6, 5, 4)
    dip = Dipole(shape, b0_dir=(0.3, 0.2, 1.0), dtype=dtype, xp=xp)
    grad = Gradient(shape, dtype=dtype)
    diag = Diagonal(xp.asarray(_weights(shape)), dtype=dtype)
    x = xp.asarray(_random(shape, dtype, seed=14))
    y = xp.asarray(_random((3, *shape), dtype, seed=15))
    for op in (dip, diag, grad @ diag @ dip, grad.H @ grad):
        assert op.dtype == dtype
        for out in (op.forward(x), op.normal(x)):
            assert_on(out)
            assert out.dtype == dtype
    assert dip.adjoint(x).dtype == dtype
    assert grad.forward(x).dtype == dtype
    assert grad.adjoint(y).dtype == dtype
    assert (grad @ dip).adjoint(y).dtype == dtype
    assert (grad @ dip).H.forward(y).dtype == dtype


def test_operators_are_linear(xp):
    shape = (5, 6, 7)
    op = (
        Gradient(shape, dtype=np.float64)
        @ Diagonal(xp.asarray(_weights(shape)))
        @ Dipole(shape, b0_dir=(0.3, 0.2, 1.0), dtype=np.float64, xp=xp)
    )
    x, z = xp.asarray(_random(shape, np.float64, 16)), xp.asarray(_random(shape, np.float64, 17))
    a, b = 0.7, -1.9
    np.testing.assert_allclose(
        to_numpy(op.forward(a * x + b * z)),
        to_numpy(a * op.forward(x) + b * op.forward(z)),
        rtol=1e-12,
        atol=1e-12,
    )
