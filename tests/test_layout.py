"""The package's layering: data flows io → applications → io over the core, never back up.

Checked from the source (AST), so it holds for every module, imported or not:
the core (FFT, kernels, operators, solvers, metrics...) imports nothing above
it; io imports no application; no application imports the benchmarks or the
command line; and top-level imports form no circle.
"""

import ast
import warnings
from pathlib import Path

import pytest

import mrirecon

ROOT = Path(mrirecon.__file__).resolve().parent
APPLICATIONS = ("qsm", "sense", "mrsi", "dsi")
CORE = ("errors", "threads", "device", "_xp", "_parallel", "fft", "kspace", "operators", "solvers", "testing")


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(name, path, *, top_level_only):
    """Absolute names of the mrirecon modules that ``name`` imports."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("mrirecon"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mrirecon"))
    known = {m for m, _ in _modules()}
    # a module's own parent packages are initialised before it: importing from them is no circle
    return {t for t in found if t in known and t != name and not name.startswith(t + ".")}


def _room(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


MODULES = dict(_modules())


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_import_upwards(name):
    room = _room(name)
    targets = {_room(t) for t in _imports(name, MODULES[name], top_level_only=False)}
    if room in CORE or room == "metrics":
        assert not targets & {"io", "phantoms", "bench", "cli", *APPLICATIONS}, (name, targets)
    if room == "io":
        assert not targets & {"bench", "cli", *APPLICATIONS}, (name, targets)
    if room in APPLICATIONS:
        assert not targets & {"bench", "cli", "phantoms"} and not targets & (set(APPLICATIONS) - {room}), (
            name,
            targets,
        )
    if room == "phantoms":
        assert not targets & {"bench", "cli"}, (name, targets)


def test_no_import_circle():
    graph = {name: _imports(name, path, top_level_only=True) for name, path in MODULES.items()}
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_fft_and_element_wise_pool_share_the_thread_policy():
    from mrirecon import _parallel, fft, threads

    assert fft.n_threads is threads.n_threads
    assert "mrirecon.fft" not in _imports(
        "mrirecon._parallel", MODULES["mrirecon._parallel"], top_level_only=False
    )
    assert _parallel.n_threads is threads.n_threads


def test_old_bids_path_still_works_with_a_warning():
    import importlib
    import sys

    sys.modules.pop("mrirecon.bids", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("mrirecon.bids")
    from mrirecon.io import bids

    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    for name in bids.__all__:
        assert getattr(old, name) is getattr(bids, name)


def test_every_benchmark_runs_from_the_command_line(capsys):
    from mrirecon.bench import BENCHMARKS
    from mrirecon.cli import main

    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for name in BENCHMARKS:
        assert name in out
        assert main(["bench", name, "--help"]) == 0
        assert "--out" in capsys.readouterr().out or name == "fft"
    assert main(["bench", "nope"]) == 2


def test_every_script_is_a_thin_runner():
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    for name in ("qsm", "pipeline", "pipeline_variants", "sense", "fft", "cohort", "mrsi", "dsi"):
        text = (scripts / f"bench_{name}.py").read_text()
        assert f'main(["bench", "{name.replace("_", "-")}"' in text
        assert len(text.splitlines()) < 30
