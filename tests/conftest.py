"""Session-wide test settings."""

import os
import tempfile

# The baselines' cache (sim/baseline_cache.py) of this test session only: nothing from an
# earlier run or from the user's own simulations stands in for a result a test checks.
os.environ["MEDSWARM_CACHE"] = tempfile.mkdtemp(prefix="medswarm-test-cache-")
