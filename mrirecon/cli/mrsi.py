"""``mrirecon mrsi``: lipid suppression of an MRSI NIfTI-MRS file by the lipid-basis penalty."""

from __future__ import annotations

import time

import numpy as np

from ..errors import InvalidParameterError, ShapeMismatchError

NAME = "mrsi"
HELP = "MRSI lipid suppression (closed-form L2 lipid-basis penalty, or the L1 baseline) on NIfTI-MRS"
DESCRIPTION = """\
Removes scalp lipids from the brain voxels of an MRSI data set (NIfTI-MRS,
complex FIDs (x, y, z, t), as spec2nii writes): each brain voxel's FID x0
becomes x = argmin |x - x0|^2 + beta |L^H x|^2 (closed form, --method l2) or
+ beta |L^H x|_1 (FISTA, --method l1), L = the FIDs of the lipid-mask voxels.
Voxels outside the brain mask (default: every voxel outside the lipid mask)
are written unchanged. OUT keeps the input's header and extension and gains
a ProcessingApplied entry (method, beta and how it was chosen).

example:
  mrirecon phantom mrsi -o ph/
  mrirecon mrsi ph/mrsi.nii.gz --lipid-mask ph/lipid_mask.nii.gz --brain-mask ph/brain_mask.nii.gz \\
      -o ph/mrsi_l2.nii.gz --figure ph/mrsi_l2.png
"""


def add_arguments(p) -> None:
    p.add_argument("input", metavar="IN", help="NIfTI-MRS file (.nii.gz) of complex FIDs")
    p.add_argument(
        "--lipid-mask", required=True, metavar="LIPID", help="NIfTI mask of the scalp/lipid voxels"
    )
    p.add_argument("--brain-mask", metavar="BRAIN", help="NIfTI mask of the voxels to suppress in")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output NIfTI-MRS (.nii.gz)")
    p.add_argument("--method", choices=("l2", "l1"), default="l2", help="l2 (closed form, default) or l1")
    p.add_argument("--beta", default="auto", help="penalty weight, or 'auto' (L2 only; default)")
    p.add_argument("--rank", type=int, help="keep only the leading RANK singular vectors of the lipid basis")
    p.add_argument("--max-iter", type=int, default=2000, help="L1: FISTA iterations at most (default 2000)")
    p.add_argument("--figure", metavar="F.png", help="NAA maps and spectra before/after")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")


def _mask(path, shape, what):
    from ..io import load_nifti

    vol = load_nifti(path, ndim=None, dtype=None)
    m = np.asarray(vol.data)
    while m.ndim > len(shape) and m.shape[-1] == 1:
        m = m[..., 0]
    while m.ndim < len(shape):
        m = m[..., None]
    if m.shape != tuple(shape):
        raise ShapeMismatchError(f"{path}: the {what} has shape {m.shape}, the MRSI grid is {tuple(shape)}")
    if not np.all(np.isfinite(m)):
        raise InvalidParameterError(f"{path}: the {what} holds NaN or Inf")
    return m > 0, vol


def run(args) -> int:
    from .. import io, mrsi
    from ..io.nifti_mrs import load_nifti_mrs, save_nifti_mrs

    t0 = time.perf_counter()
    io.check_writable(args.output, force=args.force)
    if args.figure:
        io.check_writable(args.figure, force=args.force)
    if not str(args.output).lower().endswith((".nii.gz", ".nii")):
        raise InvalidParameterError(f"-o must end in .nii.gz or .nii, got {args.output}")
    beta = args.beta
    if beta != "auto":
        try:
            beta = float(beta)
        except ValueError:
            raise InvalidParameterError(
                f"--beta must be a positive number or 'auto', got {args.beta!r}"
            ) from None
        if not (np.isfinite(beta) and beta > 0):
            raise InvalidParameterError(f"--beta must be a positive number or 'auto', got {args.beta!r}")
    elif args.method == "l1":
        raise InvalidParameterError("--method l1 needs a numeric --beta (auto is for the closed-form L2)")
    mrs = load_nifti_mrs(args.input)
    if mrs.data.ndim != 4:
        raise ShapeMismatchError(f"{args.input}: expected (x, y, z, t) FIDs, got shape {mrs.data.shape}")
    spatial = mrs.data.shape[:3]
    lipid, lvol = _mask(args.lipid_mask, spatial, "lipid mask")
    if not np.allclose(lvol.affine, mrs.affine, atol=1e-3):
        raise ShapeMismatchError(f"{args.lipid_mask}: the lipid mask's affine differs from the MRSI data's")
    brain = None
    if args.brain_mask:
        brain, bvol = _mask(args.brain_mask, spatial, "brain mask")
        if not np.allclose(bvol.affine, mrs.affine, atol=1e-3):
            raise ShapeMismatchError(
                f"{args.brain_mask}: the brain mask's affine differs from the MRSI data's"
            )
    if not np.all(np.isfinite(mrs.data)):
        raise InvalidParameterError(f"{args.input}: the data hold NaN or Inf")
    out, info = mrsi.lipid_suppress(
        mrs.data,
        lipid,
        method=args.method,
        beta=beta,
        brain_mask=brain,
        rank=args.rank,
        dwell_time_s=mrs.dwell_time_s,
        spectrometer_frequency_mhz=mrs.spectrometer_frequency_mhz,
        max_iter=args.max_iter,
        return_info=True,
    )
    details = (
        f"lipid-basis penalty, method {info.method}, beta {info.beta:.6g} ({info.beta_source}; "
        f"normalised {info.beta_normalised:.4g}), {info.n_lipid_voxels} lipid voxels, "
        f"{info.n_brain_voxels} brain voxels, rank used {info.rank_used}"
    )
    provenance = {"Method": "Lipid suppression", "Details": details}
    fig = None
    if args.figure:
        fig = _figure(mrs, out, brain if brain is not None else ~lipid)
    import contextlib

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(io.atomic_path(args.output, force=args.force))
        save_nifti_mrs(
            tmp,
            out,
            dwell_time_s=mrs.dwell_time_s,
            affine=mrs.affine,
            header_extension=mrs.header_extension,
            provenance=provenance,
            force=True,
        )
        if fig is not None:
            figtmp = stack.enter_context(io.atomic_path(args.figure, force=args.force))
            fig.savefig(figtmp, dpi=110, format="png")
    print(f"wrote {args.output}: {details} ({time.perf_counter() - t0:.2f} s)")
    return 0


def _figure(mrs, out, brain):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import mrsi

    kw = dict(dwell_time_s=mrs.dwell_time_s, spectrometer_frequency_mhz=mrs.spectrometer_frequency_mhz)
    z = mrs.data.shape[2] // 2
    before = mrsi.metabolite_map(mrs.data[:, :, z], mrsi.METABOLITE_BANDS_PPM["NAA"], **kw)
    after = mrsi.metabolite_map(out[:, :, z], mrsi.METABOLITE_BANDS_PPM["NAA"], **kw)
    b = brain[:, :, z]
    vmax = np.percentile(after[b], 99) if b.any() else None
    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    for a, img, title in ((ax[0], before, "NAA before"), (ax[1], after, "NAA after")):
        im = a.imshow(np.where(b, img, 0).T, origin="lower", cmap="magma", vmin=0, vmax=vmax)
        a.set_title(title)
        a.axis("off")
        fig.colorbar(im, ax=a, fraction=0.046)
    ppm = mrsi.ppm_axis(mrs.data.shape[-1], **kw)
    idx = np.argwhere(b)
    if len(idx):
        i, j = idx[len(idx) // 2]
        ax[2].plot(ppm, mrsi.spectrum(mrs.data[i, j, z]).real, lw=0.8, label="before")
        ax[2].plot(ppm, mrsi.spectrum(out[i, j, z]).real, lw=0.8, label="after")
        ax[2].set_xlim(4.2, 0.5)
        ax[2].set_xlabel("ppm")
        ax[2].set_title(f"voxel ({i}, {j}, {z})")
        ax[2].legend()
    fig.tight_layout()
    return fig
