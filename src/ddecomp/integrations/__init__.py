"""Integrations: ddecomp's loaders behind other frameworks' interfaces (optional extras).

::

    loading (VSLLoader, layout="flat") ──> torchtitan   (a torchtitan BaseDataLoader)

- :mod:`.torchtitan`: :class:`~ddecomp.integrations.torchtitan.DDDataLoader`, DD's flat layout as
  torchtitan 0.3.0's dataloader (``pip install "ddecomp[torchtitan]"``), its state in
  torchtitan's DCP checkpoints.

Each module imports its framework at import time; ``import ddecomp`` imports none of them.
"""
