"""deft6g.benchmarks: one module per study or benchmark, and the table of `deft6g` subcommands that runs them
(cli.py)."""
