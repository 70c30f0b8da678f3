"""``python -m tinyprec`` (used by ``torchrun -m tinyprec train RECIPE``)."""

from tinyprec.cli import main

main()
