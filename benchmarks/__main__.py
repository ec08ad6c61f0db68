"""``python -m benchmarks [options]``: an alias of ``shmstore bench [options]``."""

import sys

from shmstore.bench import run_cli

sys.exit(run_cli(sys.argv[1:], prog="python -m benchmarks"))
