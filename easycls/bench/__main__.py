"""`python -m easycls.bench`: see docs/benchmarks.md."""
import sys

from easycls.bench.throughput import main

sys.exit(main())
