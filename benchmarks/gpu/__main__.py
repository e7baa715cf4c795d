"""``python -m benchmarks.gpu [options]``: the same as ``python -m benchmarks gpu [options]``."""

import sys

from benchmarks.gpu.driver import main

sys.exit(main())
