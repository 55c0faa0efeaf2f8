"""``python -m cartoondiff.figures``: the figures command (its help: ``--help``)."""

from cartoondiff.figures import console

console()
