"""``python -m aeserve`` runs the CLI."""

from aeserve.cli import main

main()
