"""`python -m counters`: the `counters` command."""

from counters.cli import main

main()
