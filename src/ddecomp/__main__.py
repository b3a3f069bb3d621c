"""``python -m ddecomp ...`` (also what ``torchrun -m ddecomp train ...`` runs)."""

import sys

from .cli import main

sys.exit(main())
