"""``python -m mrirecon``: the command line, as the ``mrirecon`` script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
