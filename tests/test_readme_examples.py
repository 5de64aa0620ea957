"""The README's command-line examples run as written, in order, from an empty directory.

The ```bash blocks under the :data:`HEADINGS` of ``README.md`` (a section ends at the
next "## " heading). Every
line that is not a comment is one ``mrirecon`` command (a trailing backslash continues
it); they run in sequence, in process, in one empty temporary directory, so each
example can only use files that the examples before it wrote.

The one substitution, for speed: every ``--shape X Y Z`` is scaled so that its longest
axis has :data:`LONGEST_AXIS` voxels (the phantoms keep their field of view, so only the
voxel size grows). Nothing else is changed.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from mrirecon.cli import main

ROOT = Path(__file__).resolve().parents[1]
HEADINGS = (
    "## Command line",
    "## From multi-echo GRE (BIDS) to χ",
    "## Parallel imaging: closed-form SENSE",
    "### 4-D series (functional QSM)",
)
LONGEST_AXIS = 48


def _source() -> Path:
    return ROOT / "README.md"


def _section(text: str, heading: str) -> str:
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == heading]
    assert starts, f"heading {heading!r} not found"
    body = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith("## "):
            break
        body.append(line)
    return "\n".join(body)


def _commands(section: str) -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [c.strip() for c in joined.splitlines() if c.strip() and not c.strip().startswith("#")]
    return commands


def _small(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--shape":
            shape = [int(v) for v in out[i + 1 : i + 4]]
            scale = LONGEST_AXIS / max(shape)
            out[i + 1 : i + 4] = [str(max(16, round(n * scale))) for n in shape]
    return out


def _examples():
    text = _source().read_text(encoding="utf-8")
    return [(h, _commands(_section(text, h))) for h in HEADINGS]


def test_the_sections_have_examples():
    for heading, commands in _examples():
        assert len(commands) >= 2, (heading, commands)
        for c in commands:
            assert c.startswith("mrirecon "), f"not an mrirecon command: {c!r}"


def test_examples_run_in_order(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ran = []
    for heading, commands in _examples():
        for command in commands:
            argv = _small(shlex.split(command, comments=True)[1:])
            rc = main(argv)
            captured = capsys.readouterr()
            assert rc == 0, f"{heading}: {command!r} exited {rc}: {captured.err.strip()[-500:]}"
            ran.append(argv)
    assert ran
    # what the examples promise: NIfTI + JSON sidecar for every -o of mrirecon qsm, a BIDS
    # derivative for every mrirecon run, with χ finite and zero outside its mask
    from mrirecon.io import load_nifti

    for argv in ran:
        if argv[0] == "qsm":
            out = Path(argv[argv.index("-o") + 1])
            meta = json.loads(out.with_name(out.name.replace(".nii.gz", ".json")).read_text())
            assert "Method" in meta or "method" in json.dumps(meta).lower()
            chi = load_nifti(out, ndim=None).data  # 3-D, or a 4-D series
            assert np.isfinite(chi).all() and chi.any()
            for flag in ("--figure", "--lcurve-figure"):
                if flag in argv:
                    assert Path(argv[argv.index(flag) + 1]).read_bytes()[:4] == b"\x89PNG"
        elif argv[0] == "sense":
            out = Path(argv[argv.index("-o") + 1])
            img = load_nifti(out, ndim=None).data
            assert np.isfinite(img).all() and img.any()
            assert "Lambda" in json.loads(out.with_name(out.name.replace(".nii.gz", ".json")).read_text())
        elif argv[0] == "run":
            out = Path(argv[2])
            desc = json.loads((out / "dataset_description.json").read_text())
            assert desc["DatasetType"] == "derivative"
            chis = sorted(out.glob("sub-*/anat/*_Chimap.nii.gz"))
            assert chis, f"no χ map under {out}"
            for path in chis:
                chi = load_nifti(path, ndim=None).data
                mask = load_nifti(Path(str(path).replace("_Chimap", "_desc-brain_mask"))).data > 0
                assert np.isfinite(chi).all() and chi[mask].any() and not chi[~mask].any()


@pytest.mark.parametrize("heading", HEADINGS)
def test_every_example_reads_only_what_an_earlier_one_wrote(heading):
    # a static check beside the run above: each input path an example names is the output
    # directory or file of an earlier example (or inside one)
    written: list[str] = []
    for h, commands in _examples():
        for command in commands:
            argv = shlex.split(command, comments=True)[1:]
            inputs = []
            if argv[0] == "qsm":
                inputs = [argv[1], argv[argv.index("-m") + 1]] if "-m" in argv else [argv[1]]
            elif argv[0] in ("run", "sense"):
                inputs = [argv[1]]
            if h == heading:
                for p in inputs:
                    assert any(p.rstrip("/").startswith(w.rstrip("/")) for w in written), (command, p)
            for flag in ("-o", "--output-dir"):
                if flag in argv:
                    written.append(argv[argv.index(flag) + 1])
            if argv[0] == "run":
                written.append(argv[2])
