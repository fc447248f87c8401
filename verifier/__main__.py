"""``python -m verifier``: the ``verifier`` command line (:func:`verifier.cli.main`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
