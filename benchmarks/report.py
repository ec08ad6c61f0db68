"""``python -m benchmarks.report FILE.json``: an alias of ``python -m shmstore.bench.report``."""

import sys

from shmstore.bench.report import main

if __name__ == "__main__":
    sys.exit(main())
