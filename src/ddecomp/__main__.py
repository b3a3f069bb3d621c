"""``python -m ddecomp ...`` (also what ``torchrun -m ddecomp train ...`` runs)."""

import sys

from ddecomp.cli import main

sys.exit(main())
