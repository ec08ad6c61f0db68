"""``python -m shmstore.bench [options]``: the same as ``shmstore bench [options]``."""

import sys

from .runner import run_cli

sys.exit(run_cli(sys.argv[1:]))
