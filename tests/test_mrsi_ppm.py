"""ppm axes and spectra: a resonance lands at its chemical shift; the spectrum is unitary."""

import numpy as np

from mrirecon import mrsi


def test_singlet_lands_on_its_ppm_and_energy_is_kept():
    n, dt, sf = 512, 5e-4, 123.2
    t = np.arange(n) * dt
    fid = np.exp(2j * np.pi * (2.008 - 4.65) * sf * t - t / 0.1).astype(np.complex64)
    spec = mrsi.spectrum(fid)
    ppm = mrsi.ppm_axis(n, dwell_time_s=dt, spectrometer_frequency_mhz=sf)
    assert abs(ppm[np.argmax(np.abs(spec))] - 2.008) < 1.0 / (n * dt) / sf
    np.testing.assert_allclose(np.linalg.norm(spec), np.linalg.norm(fid), rtol=1e-5)
    np.testing.assert_allclose(mrsi.fid_from_spectrum(spec), fid, atol=1e-5)
    assert np.all(np.diff(ppm) > 0)
    np.testing.assert_allclose(
        mrsi.hz_to_ppm(mrsi.ppm_to_hz(3.0, spectrometer_frequency_mhz=sf), spectrometer_frequency_mhz=sf), 3.0
    )
