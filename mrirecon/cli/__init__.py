"""The ``mrirecon`` command: one dispatcher, one module per subcommand.

Every subcommand module has ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Bad input (any :class:`mrirecon.errors.MriReconError`, or
a usage error) prints one line to stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import MriReconError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _commands():
    from . import bench, dsi, fft_wisdom, mrsi, phantom, qsm, run, sense

    return [qsm, run, sense, phantom, bench, fft_wisdom, mrsi, dsi]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="mrirecon",
        description=(
            "MRI reconstruction with fast closed-form L2 regularisation. "
            "Run 'mrirecon COMMAND --help' for the options of a command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"mrirecon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in _commands():
        p = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _prog=p.prog, _parser=p)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit code.

    0 success, 1 some items failed (``run``), 2 bad input, 130 SIGINT, 143
    SIGTERM. On a signal the temporary files being written are removed.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code or 0)
    args._argv = list(sys.argv[1:] if argv is None else argv)
    from ..io.atomic import Terminated, stop_signals

    try:
        with stop_signals():
            return int(args._run(args) or 0)
    except MriReconError as exc:
        print(f"{args._prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{args._prog}: interrupted (SIGINT); no partial file was left", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{args._prog}: terminated (SIGTERM); no partial file was left", file=sys.stderr)
        return Terminated.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
