"""deft6g.benchmarks: one module per study or benchmark, and the `deft6g` command line (cli.py) that runs them."""
