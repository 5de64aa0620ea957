"""mrirecon.progress: bars on a terminal, plain lines in a log."""

import io

import pytest

from mrirecon.progress import LineProgress, progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_log_gets_plain_lines_without_control_characters(monkeypatch):
    monkeypatch.delenv("MRIRECON_PROGRESS", raising=False)
    log = io.StringIO()
    bar = progress(range(50), desc="series", unit="series", file=log)
    assert isinstance(bar, LineProgress)
    assert list(bar) == list(range(50))
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert 5 <= len(lines) <= 11  # about every 10 %, and the end
    assert lines[-1].startswith("series: 50/50 series (100 %)")


def test_terminal_gets_a_tqdm_bar(monkeypatch):
    monkeypatch.delenv("MRIRECON_PROGRESS", raising=False)
    from tqdm import tqdm

    bar = progress(total=3, desc="x", file=_Tty())
    assert isinstance(bar, tqdm)
    bar.close()


@pytest.mark.parametrize(("mode", "expect_lines"), [("lines", True), ("off", False)])
def test_environment_overrides(monkeypatch, mode, expect_lines):
    monkeypatch.setenv("MRIRECON_PROGRESS", mode)
    out = _Tty()
    with progress(total=4, desc="it", file=out) as bar:
        for _ in range(4):
            bar.update()
        bar.set_postfix({"res": "1e-3"})
    assert bool(out.getvalue()) is expect_lines
    if expect_lines:
        assert out.getvalue().splitlines()[-1].startswith("it: 4/4")


def test_unknown_total_prints_each_update_and_closes_once():
    out = io.StringIO()
    bar = LineProgress(desc="volumes", file=out)
    bar.update()
    bar.update(2)
    bar.close()
    bar.close()
    assert out.getvalue().splitlines() == [
        line for line in out.getvalue().splitlines() if line.startswith("volumes: ")
    ]
    assert len(out.getvalue().splitlines()) == 2
