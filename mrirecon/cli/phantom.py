"""``mrirecon phantom KIND``: write a numerical phantom (one module per kind: ``phantom_<kind>.py``)."""

from __future__ import annotations

import argparse
import importlib

NAME = "phantom"
HELP = "write a numerical phantom (test data with its truth) for one of the applications"

#: The phantom kinds; each is the module ``mrirecon.cli.phantom_<kind>`` with
#: ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args)``.
KINDS = ("qsm", "sense", "mrsi", "dsi", "megre")

DESCRIPTION = """\
Numerical phantoms for testing reconstructions: each writes the data an
application takes, its truth, and a JSON of the parameters into a directory.
'mrirecon phantom KIND --help' lists a kind's files and options.

example:
  mrirecon phantom qsm -o phantom/ --shape 128 128 128 --noise-ppm 0.003
"""


def _module(kind):
    return importlib.import_module(f"{__package__}.phantom_{kind}")


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="kind", metavar="KIND", parser_class=type(p))
    sub.required = True
    for kind in KINDS:
        module = _module(kind)
        q = sub.add_parser(
            kind,
            help=module.HELP,
            description=module.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(q)
        q.set_defaults(_phantom=module.run, _prog=q.prog)


def run(args) -> int:
    return int(args._phantom(args) or 0)
