"""symbackprop: a neural network spec in, its backpropagation derived, printed and generated out.

The pipeline (one module per stage, each returning a frozen value)::

    spec -> functions -> graph -> derive -> render / codegen -> verify -> cli
"""

from __future__ import annotations

__version__ = "0.1.0"
