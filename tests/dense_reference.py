"""Dense references for the QSM tests: the periodic dipole convolution and the circular
differences as explicit matrices, built with NumPy's FFT and np.roll (independent of mrirecon.fft)."""

import numpy as np

from mrirecon.kspace import dipole_kernel


def dipole_matrix(shape, vox, b):
    """Dense matrix of the periodic dipole convolution, built with numpy.fft."""
    d = dipole_kernel(shape, voxel_size_mm=vox, b0_dir=b, dtype=np.float64)
    n = int(np.prod(shape))
    eye = np.eye(n).reshape((n, *shape))
    return np.real(np.fft.ifftn(d * np.fft.fftn(eye, axes=(1, 2, 3)), axes=(1, 2, 3))).reshape(n, n).T


def difference_matrices(shape):
    """Dense circular forward differences, built in image space (np.roll)."""
    n = int(np.prod(shape))
    eye = np.eye(n).reshape((n, *shape))
    return [(np.roll(eye, -1, axis=a + 1) - eye).reshape(n, n).T for a in range(3)]
