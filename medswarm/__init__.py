"""The medswarm application: the `medswarm` command line and the benchmarks, above the
libraries (node, gossip, ledger, sim), which never import it."""
