"""`python -m easycls.bench` (throughput) and `python -m easycls.bench --setup`: see docs/benchmarks.md."""
import sys

from easycls.bench import setup, throughput

sys.exit(setup.main() if "--setup" in sys.argv[1:] else throughput.main())
