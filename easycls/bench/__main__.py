"""`python -m easycls.bench` (throughput), `--setup` (set-up at scale) and `--budget` (time budgets): see
docs/benchmarks.md."""
import sys

from easycls.bench import budget, setup, throughput

if "--setup" in sys.argv[1:]:
    sys.exit(setup.main())
sys.exit(budget.main() if "--budget" in sys.argv[1:] else throughput.main())
