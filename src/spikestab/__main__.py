"""``python -m spikestab``: the same command line as the ``spikestab`` script."""

import sys

from .cli import main

if __name__ == "__main__":  # spawned worker processes (train --nproc) import this module again
    sys.exit(main())
