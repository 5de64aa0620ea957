"""Cohorts: mrirecon run on a real Dask LocalCluster, resume, worker death, SIGTERM/SIGINT, logs."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mrirecon import cohort
from mrirecon.cli import main
from mrirecon.io import bids
from mrirecon.io.atomic import atomic_path, atomic_paths, live_temporaries, stop_signals, sweep_temporaries
from mrirecon.phantoms import simulate_megre

SHAPE = (40, 40, 40)
PARAMS = {"b0_tesla": None, "device": "cpu", "pipeline": {"background": "sharp", "method": "l2", "lam": 0.01}}


def _temporaries(root: Path):
    return [p for p in root.rglob(".*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def megre():
    return simulate_megre(SHAPE, snr=80.0, seed=1)


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory, megre):
    """Three subjects; sub-03 lacks an echo's sidecar (broken)."""
    root = tmp_path_factory.mktemp("cohort")
    for sub in ("01", "02", "03"):
        bids.write_megre_dataset(root, sub, megre, write_mask=True)
    sidecar = root / "sub-03" / "anat" / "sub-03_echo-2_part-phase_MEGRE.json"
    shutil.move(sidecar, root / "sub-03.echo2.json.bak")
    return root


def _stems(results, status):
    return sorted(r.series for r in results if r.status == status)


def test_local_cluster_isolates_a_broken_subject_and_resumes(cohort_dir, tmp_path, capsys):
    data = tmp_path / "bids"
    shutil.copytree(cohort_dir, data)
    out = tmp_path / "deriv"
    assert main(["run", str(data), str(out), "--workers", "2", "--background", "sharp", "--lam", "0.01"]) == 1
    captured = capsys.readouterr()
    assert "sub-03" in captured.err and "sub-03_echo-2_part-phase_MEGRE.json" in captured.err
    for sub in ("sub-01", "sub-02"):
        assert (out / sub / "anat" / f"{sub}_Chimap.nii.gz").exists()
    assert not (out / "sub-03").exists() or not any((out / "sub-03").rglob("*"))
    (report,) = (out / "logs").glob("mrirecon-run-*.json")
    doc = json.loads(report.read_text())
    assert doc["Counts"] == {"done": 2, "failed": 1} and "LocalCluster, 2 workers" in doc["Engine"]
    assert "series" in captured.out and "status" in captured.out  # the summary table

    # fix the broken subject: the rerun (in process this time) computes only sub-03
    shutil.move(
        data / "sub-03.echo2.json.bak", data / "sub-03" / "anat" / "sub-03_echo-2_part-phase_MEGRE.json"
    )
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("sub-0[12]_Chimap.nii.gz")}
    assert main(["run", str(data), str(out), "--background", "sharp", "--lam", "0.01"]) == 0
    captured = capsys.readouterr()
    assert "sub-01: skipped" in captured.out and "sub-02: skipped" in captured.out
    assert "sub-03: wrote" in captured.out
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # untouched
    assert not _temporaries(out)
    # the workers (1 FFT thread each) computed what the in-process engine (2 threads) computes, to rounding
    from mrirecon.io import load_nifti

    assert (
        main(
            [
                "run",
                str(data),
                str(tmp_path / "again"),
                "--include",
                "01",
                "--background",
                "sharp",
                "--lam",
                "0.01",
            ]
        )
        == 0
    )
    name = "sub-01/anat/sub-01_Chimap.nii.gz"
    a, b = load_nifti(out / name).data, load_nifti(tmp_path / "again" / name).data
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()


def test_changed_input_or_parameters_are_not_overwritten_silently(cohort_dir, tmp_path):
    data = tmp_path / "bids"
    shutil.copytree(cohort_dir, data, ignore=shutil.ignore_patterns("sub-03*"))
    series = bids.find_series(data)
    out = tmp_path / "deriv"
    quiet = {"progress": False, "log": lambda _: None}
    assert _stems(cohort.run_cohort(series, out, PARAMS, **quiet), "done") == ["sub-01", "sub-02"]
    assert _stems(cohort.run_cohort(series, out, PARAMS, **quiet), "skipped") == ["sub-01", "sub-02"]
    # touch an input of sub-02: only it is out of date
    phase = data / "sub-02" / "anat" / "sub-02_echo-1_part-phase_MEGRE.nii.gz"
    os.utime(phase, ns=(phase.stat().st_atime_ns, phase.stat().st_mtime_ns + 10**9))
    res = cohort.run_cohort(series, out, PARAMS, **quiet)
    assert _stems(res, "skipped") == ["sub-01"] and _stems(res, "failed") == ["sub-02"]
    assert "input files" in next(r.error for r in res if r.series == "sub-02")
    res = cohort.run_cohort(series, out, PARAMS, force=True, **quiet)
    assert _stems(res, "done") == ["sub-01", "sub-02"]
    other = {**PARAMS, "pipeline": {**PARAMS["pipeline"], "lam": 0.02}}
    res = cohort.run_cohort(series, out, other, **quiet)
    assert all("parameters" in r.error for r in res)


def test_a_worker_that_dies_fails_its_series_without_a_hang(cohort_dir, tmp_path):
    import dask
    from distributed import Client, LocalCluster

    series = bids.find_series(cohort_dir, include=["01"])
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    try:
        with Client(cluster) as client:
            (pid,) = client.run(os.getpid).values()
        # a task that holds its worker long enough to be killed mid-way
        # (CG with no tolerance: thousands of iterations, seconds on any machine)
        slow = {
            **PARAMS,
            "pipeline": {
                **PARAMS["pipeline"],
                "method": "cg-l2",
                "method_options": {"tol": 0.0, "max_iter": 20000},
            },
        }
        killer = threading.Timer(1.5, os.kill, (pid, signal.SIGKILL))
        killer.start()
        res = cohort.run_cohort(
            series, tmp_path / "out", slow, scheduler=cluster.scheduler_address, progress=False, log=print
        )
        killer.cancel()  # run_cohort returned: the dead worker did not leave it waiting
        (r,) = res
        if r.status == "done":  # the machine was fast enough to finish first: nothing to check
            pytest.skip("the series finished before its worker was killed")
        assert r.status == "failed" and "worker died" in r.error
    finally:
        cluster.close()


def test_atomic_group_all_or_nothing(tmp_path):
    targets = [tmp_path / "a.json", tmp_path / "b.json"]
    with pytest.raises(RuntimeError), atomic_paths(targets) as tmps:
        tmps[0].write_text("{}")
        assert live_temporaries() == sorted(tmps)
        raise RuntimeError("writer failed")
    assert not any(p.exists() for p in targets) and not list(tmp_path.iterdir()) and not live_temporaries()
    with atomic_paths(targets) as tmps:
        for t in tmps:
            t.write_text("{}")
    assert all(p.read_text() == "{}" for p in targets) and not live_temporaries()
    (tmp_path / ".a.json.x1y2.tmp.json").write_text("left by a killed process")
    assert sweep_temporaries(targets) == [tmp_path / ".a.json.x1y2.tmp.json"]
    assert sorted(tmp_path.iterdir()) == targets


def test_stop_signals_turn_sigterm_into_an_exception_that_cleans_up(tmp_path):
    from mrirecon.io.atomic import Terminated

    with pytest.raises(Terminated), stop_signals(), atomic_path(tmp_path / "x.nii.gz") as tmp:
        tmp.write_bytes(b"partial")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert not list(tmp_path.iterdir())
    assert signal.getsignal(signal.SIGTERM) is not None  # restored


class _SignalledWhileCollected:
    def __del__(self):
        signal.raise_signal(self.signum)  # the handler's exception is swallowed here


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    ("signum", "exc"), [(signal.SIGTERM, "Terminated"), (signal.SIGINT, "KeyboardInterrupt")]
)
def test_a_signal_swallowed_by_a_finaliser_still_stops_before_the_commit(tmp_path, signum, exc):
    # nibabel's OrderedSet.__del__ swallowed a SIGTERM in CI and the command then wrote its output
    import builtins

    from mrirecon.io import atomic

    expected = getattr(atomic, exc, None) or getattr(builtins, exc)
    obj = _SignalledWhileCollected()
    obj.signum = signum
    with pytest.raises(expected), stop_signals():
        with atomic_path(tmp_path / "x.nii.gz") as tmp:
            tmp.write_bytes(b"whole")
            del obj  # the signal arrives; Python prints "Exception ignored" and goes on
        pytest.fail("the commit went ahead after the signal")
    assert not list(tmp_path.iterdir())
    with atomic_path(tmp_path / "y.json") as tmp:  # the request ends with the block
        tmp.write_text("{}")
    assert (tmp_path / "y.json").exists()
    with pytest.raises(expected), stop_signals():  # a group of outputs, and the end of the block
        obj = _SignalledWhileCollected()
        obj.signum = signum
        with atomic_paths([tmp_path / "a.json", tmp_path / "b.json"]) as tmps:
            for t in tmps:
                t.write_text("{}")
            del obj
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.json"]
    with pytest.raises(expected), stop_signals():  # an ``except`` handling the stop writes its report
        obj = _SignalledWhileCollected()
        obj.signum = signum
        try:
            del obj
            with atomic_path(tmp_path / "x.json") as tmp:
                tmp.write_text("{}")
        except expected:
            with atomic_paths([tmp_path / "report.json", tmp_path / "report.md"]) as tmps:
                for t in tmps:
                    t.write_text("report")
            raise
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md", "y.json"]
    for name in ("report.json", "report.md", "y.json"):
        (tmp_path / name).unlink()
    with pytest.raises(expected), stop_signals():
        obj = _SignalledWhileCollected()
        obj.signum = signum
        del obj


# a writer that blocks inside the write, so that a signal arrives while a temporary file exists
_SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    import nibabel as nib
    real_save, real_stream = nib.save, nib.Nifti1Image.to_stream
    def slow_save(img, path):
        real_save(img, path)
        time.sleep(30)
    def slow_stream(img, f, **kw):  # .nii.gz goes through ISA-L's stream
        real_stream(img, f, **kw)
        f.flush()
        time.sleep(30)
    nib.save = slow_save
    nib.Nifti1Image.to_stream = slow_stream
    from mrirecon.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _run_and_signal(args, watch: Path, sig, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not _temporaries(watch):
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    assert _temporaries(watch), proc.communicate()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_sigterm_during_mrirecon_qsm_leaves_no_temporary_files(tmp_path):
    assert main(["phantom", "qsm", "-o", str(tmp_path / "ph"), "--shape", "24", "24", "24"]) == 0
    out = tmp_path / "res"
    out.mkdir()
    args = ["qsm", str(tmp_path / "ph" / "field.nii.gz"), "-m", str(tmp_path / "ph" / "mask.nii.gz")]
    rc, _, err = _run_and_signal([*args, "-o", str(out / "chi.nii.gz")], out, signal.SIGTERM, tmp_path)
    assert rc == 143, err
    assert "terminated" in err
    assert list(out.iterdir()) == []


def test_sigint_during_a_run_reports_what_was_completed(cohort_dir, tmp_path):
    data = tmp_path / "bids"
    shutil.copytree(cohort_dir, data, ignore=shutil.ignore_patterns("sub-03*"))
    out = tmp_path / "deriv"
    args = ["run", str(data), str(out), "--background", "sharp", "--lam", "0.01"]
    assert main([*args, "--include", "01"]) == 0  # sub-01 done before
    rc, _, err = _run_and_signal(args, out / "sub-02", signal.SIGINT, tmp_path)
    assert rc == 130, err
    assert "completed series (1 of 2): sub-01" in err
    assert "nothing was written" not in err
    assert not _temporaries(out)
    assert (out / "sub-01" / "anat" / "sub-01_Chimap.nii.gz").exists()
    assert not any((out / "sub-02").rglob("*.nii.gz"))
    assert "\r" not in err and "\x1b" not in err  # stderr is a pipe: plain lines, no redrawn bars
