"""``python -m symback``: the command line (see :mod:`symback.cli`)."""
import sys

from .cli import main

sys.exit(main())
