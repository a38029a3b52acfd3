"""Model lifecycle tooling: the `mtc` command (build, train, evaluate, publish, fetch)."""
