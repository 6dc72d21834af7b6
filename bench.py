"""Benchmark of the pipeline against a baseline of the original design: the entry point of the
package bench/ (`python bench.py --help` describes what it measures; `python -m bench` is the same)."""
import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
