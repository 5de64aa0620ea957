"""MRSI phantom: masks from geometry, lipids 100-300x NAA, data = truth + lipids + noise, NAA at 2.01 ppm."""

import numpy as np

from mrirecon import mrsi
from mrirecon.phantoms.mrsi import mrsi_phantom


def test_phantom_structure():
    ph = mrsi_phantom((16, 16), n_points=256, oversample=2, naa_snr=15)
    np.testing.assert_allclose(ph.data, ph.truth + ph.lipids + ph.noise, atol=1e-3)
    assert ph.data.shape == (16, 16, 1, 256) and ph.data.dtype == np.complex64
    assert ph.brain_mask.any() and ph.lipid_mask.any() and not (ph.brain_mask & ph.lipid_mask).any()
    kw = dict(dwell_time_s=ph.dwell_time_s, spectrometer_frequency_mhz=ph.spectrometer_frequency_mhz)
    ppm = mrsi.ppm_axis(256, **kw)
    spec = np.abs(mrsi.spectrum(ph.truth[ph.brain_mask])).mean(0)
    sel = (ppm > 1.8) & (ppm < 2.3)
    assert abs(ppm[sel][np.argmax(spec[sel])] - 2.008) < 0.06
    # lipid band in the brain: the truth holds only metabolite tails, the lipids ring in from the scalp
    lip_band = (ppm > 1.0) & (ppm < 1.6)
    assert (
        np.abs(mrsi.spectrum(ph.truth[ph.brain_mask])[:, lip_band]).max()
        < 0.05 * np.abs(mrsi.spectrum(ph.lipids[ph.brain_mask])[:, lip_band]).max()
    )
    # seeds change noise and geometry
    other = mrsi_phantom((16, 16), n_points=256, oversample=2, geometry_seed=1)
    assert not np.array_equal(other.brain_mask, ph.brain_mask)
