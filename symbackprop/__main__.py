"""``python -m symbackprop`` is the ``symbackprop`` command."""

from __future__ import annotations

import sys

from symbackprop.cli import main

if __name__ == "__main__":
    sys.exit(main())
