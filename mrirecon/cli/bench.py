"""``mrirecon bench NAME``: run one of the package's benchmarks (see ``mrirecon bench NAME --help``)."""

from __future__ import annotations

import argparse

from ..bench import BENCHMARKS

NAME = "bench"
HELP = "run a benchmark: " + ", ".join(BENCHMARKS) + " (timings side by side, in one run)"
DESCRIPTION = (
    """\
Benchmarks time the closed forms against their baselines in one process and
print ratios against a baseline measured in the same run (medians); they write
JSON, Markdown and figures where they say so. Nothing is asserted: the machine
may be shared and noisy. 'mrirecon bench NAME --help' says what NAME measures
and lists its options.

benchmarks:
"""
    + "\n".join(f"  {name:<9} {summary}" for name, (_, summary) in BENCHMARKS.items())
    + """

example:
  mrirecon bench qsm --sizes 48 --quick --out /tmp/bq
  mrirecon bench fft --sizes 64,96 --repeats 3 --no-fresh
"""
)


def add_arguments(p) -> None:
    p.add_argument("benchmark", choices=tuple(BENCHMARKS), metavar="NAME", help="which benchmark (see above)")
    p.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own options (NAME --help)")


def run(args) -> int:
    from ..bench import load

    module = load(args.benchmark)
    parser = type(args._parser)(
        prog=f"{args._prog} {args.benchmark}",
        description=getattr(module, "DESCRIPTION", None) or module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    try:
        options = parser.parse_args(args.options)
    except SystemExit as exc:  # --help or a usage error of the benchmark's own options
        return int(exc.code or 0)
    return int(module.main(options) or 0)
