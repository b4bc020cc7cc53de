"""Session-wide test settings."""

import atexit
import os
import shutil
import tempfile

# The baselines' cache (sim/baseline_cache.py) of this test session only: nothing from an
# earlier run or from the user's own simulations stands in for a result a test checks. Removed
# when the session's process ends (each xdist worker has its own).
os.environ["MEDSWARM_CACHE"] = tempfile.mkdtemp(prefix="medswarm-test-cache-")
atexit.register(shutil.rmtree, os.environ["MEDSWARM_CACHE"], ignore_errors=True)

# No terminal size from whoever started pytest (pytest-xdist's workers get COLUMNS=80 and
# LINES=24): rich would fix its consoles' width at import to it, and a test that asks for a wide
# table (COLUMNS in the command's environment) would get a wrapped one. Every run, serial or
# distributed, from a terminal or not, sees the same widths: the tests' own.
for name in ("COLUMNS", "LINES"):
    os.environ.pop(name, None)
