"""Federated analytics: statistics and generalized linear models over every member's records,
computed from exact secure sums, never from a hospital's own figures.

Each computation here is written against one seam, `Total`: given this site's vector, return
the sum of every site's vector of the same shape. The swarm provides it with
gossip.secure_sum (node.analytics.swarm); unit tests with a plain sum over in-memory sites.
"""

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not at run time: reading a node config imports this package
    import numpy as np

# This site's float64 vector -> the element-wise sum over all contributing sites, exactly.
Total = Callable[["np.ndarray"], Awaitable["np.ndarray"]]
