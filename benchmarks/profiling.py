"""``python -m benchmarks.profiling ...``: an alias of ``python -m shmstore.bench.profiling``."""

import sys

from shmstore.bench.profiling import main

if __name__ == "__main__":
    sys.exit(main())
