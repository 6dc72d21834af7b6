"""`python -m bench`: the benchmark, as `python bench.py` runs it."""
import sys

from bench.cli import main

sys.exit(main())
