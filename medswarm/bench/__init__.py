"""The benchmarks behind `medswarm bench ...`: transport, ledger, contribution, sim, swarm,
scale, privacy, analytics, robustness."""
