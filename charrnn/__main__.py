"""`python -m charrnn` runs the CLI. Nothing else."""

from charrnn.cli import main

main()
