"""Small helpers for code that runs on NumPy or CuPy arrays alike.

The array module comes from the data (:func:`mrirecon.device.get_array_module`);
these helpers pick the matching SciPy module and keep the inputs of one call
on one device without copying data arrays behind the caller's back.
"""

from __future__ import annotations

import numpy as np

from .device import get_array_module, is_device_array
from .errors import InvalidParameterError

__all__ = ["common_module", "ndimage", "on_module"]


def ndimage(xp):
    """:mod:`scipy.ndimage` for NumPy, :mod:`cupyx.scipy.ndimage` for CuPy."""
    if xp is np:
        from scipy import ndimage as ndi

        return ndi
    from cupyx.scipy import ndimage as ndi

    return ndi


def common_module(**arrays):
    """The array module shared by the named data arrays (None entries skipped).

    Mixing NumPy and CuPy raises an :class:`InvalidParameterError` naming the
    arrays (the fix is one explicit :func:`mrirecon.device.to_device`), instead
    of copying a volume between host and device behind the caller's back.
    """
    mods = {name: get_array_module(a) for name, a in arrays.items() if a is not None}
    found = set(mods.values())
    if len(found) > 1:
        where = ", ".join(f"{name} is a {m.__name__} array" for name, m in mods.items())
        raise InvalidParameterError(
            f"the inputs are on different devices ({where}): move them to one with "
            "mrirecon.device.to_device(x, 'gpu' or 'cpu')"
        )
    return found.pop() if found else np


def on_module(xp, a, name):
    """``a`` as an array of module ``xp``, for small or boolean side inputs such as masks.

    A NumPy array (or a list) given with CuPy data is copied to the device
    once, as :func:`mrirecon.qsm._prepare.prepare` does with masks; a CuPy
    array given with NumPy data raises (no device-to-host copy is made here).
    """
    if a is None:
        return None
    if xp is np and is_device_array(a):
        raise InvalidParameterError(
            f"{name} is a CuPy array but the data are NumPy arrays: move it with "
            "mrirecon.device.to_numpy, or pass the data as CuPy arrays"
        )
    return xp.asarray(a)
