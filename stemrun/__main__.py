"""`python -m stemrun` runs the command line."""

from stemrun.cli.app import main

main()
