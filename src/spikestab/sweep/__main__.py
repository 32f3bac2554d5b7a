"""``python -m spikestab.sweep CONTEXT_JSON``: one sweep worker process (started by ``--workers N``)."""

import sys

from .worker import main

sys.exit(main())
