"""The scripts run as a user runs them: their command line in a child process, or their
main(argv) under run_cli as their `__main__` runs it."""
import subprocess
import sys

import pytest

from support import ROOT
from utils import run_cli


def run_script(script, *args):
    """A script's command line, run as a user would: (exit status, stdout, stderr)."""
    done = subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def cli(script_main, argv):
    """A script's main(argv) under run_cli, as its `__main__` runs it: the exit status."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: script_main([str(a) for a in argv]))
    return exit_info.value.code
