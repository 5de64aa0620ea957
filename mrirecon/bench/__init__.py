"""Benchmarks: each module times one application against its baselines, side by side, in one run.

Every benchmark module has ``DESCRIPTION``, ``add_arguments(parser)`` and
``main(args) -> int``; ``mrirecon bench NAME`` and ``scripts/bench_NAME.py``
run them. Shared timing, machine and table helpers live in
:mod:`~mrirecon.bench.common`.

- :mod:`~mrirecon.bench.qsm` — closed-form L2/TKD against CG-L2, TV-ADMM, TV-NLCG
- :mod:`~mrirecon.bench.pipeline` — multi-echo GRE to χ, step times and background × inversion NRMSE
- :mod:`~mrirecon.bench.pipeline_variants` — the pipeline under acquisition variants (oblique B0, 7 T, ...)
- :mod:`~mrirecon.bench.sense` — closed-form SENSE against CG-SENSE, L1-wavelet, SigPy, BART
- :mod:`~mrirecon.bench.fft` — the FFT core against its floors, scipy.fft and NumPy (CPU and GPU)
"""

#: Benchmark name → (module under mrirecon.bench, one-line summary).
BENCHMARKS = {
    "qsm": ("qsm", "closed-form L2 and TKD against CG-L2, TV-ADMM and TV-NLCG on the head phantom"),
    "pipeline": ("pipeline", "multi-echo GRE to χ: per-step times, background removal × inversion NRMSE"),
    "pipeline-variants": (
        "pipeline_variants",
        "the pipeline against the oracle under acquisition variants (oblique B0, 7 T, low SNR, ...)",
    ),
    "sense": ("sense", "closed-form SENSE against CG-SENSE, L1-wavelet, SigPy and BART"),
    "fft": ("fft", "the closed form against its FFT pair, memory/arithmetic floors, scipy.fft, NumPy"),
    "dsi": ("dsi", "DSI q-space completion: closed-form PCA-L2 against L1-wavelet FISTA and zero filling"),
    "mrsi": ("mrsi", "MRSI lipid suppression: closed-form L2 against FISTA-L1, auto β against a sweep"),
    "cohort": ("cohort", "mrirecon run over a simulated cohort in process and on Dask; a 4-D series"),
}

__all__ = ["BENCHMARKS", "load"]


def load(name):
    """The benchmark module called ``name`` (imported on demand: benchmarks are heavy)."""
    import importlib

    return importlib.import_module(f"{__name__}.{BENCHMARKS[name][0]}")
