"""Loading: from a dataset (or blend) to the batches of each rank, exact and resumable.

::

    curriculum ─> plan ─────────> vsl     (odds per bucket; the pure step list; DD's loader)
                   │      base ─┬─> vsl
    world ─────────┘            ├─> concat (concat-and-chunk baselines, optional doc mask)
                                └─> pack   (best-fit-decreasing packing with a doc mask)

- :mod:`.curriculum`: named odds (uniform, grow-linear, grow-p2, ...) per bucket.
- :mod:`.plan`: :func:`build_plan`, a pure numpy function from bucket sizes to global steps.
- :mod:`.world`: where this process sits (rank, world size, workers), as one explicit value.
- :mod:`.base`: what every loader shares: epoch cursor, workers, state dict, resume.
- :mod:`.vsl`: :class:`VSLLoader`, one bucket per step, constant tokens per step.
- :mod:`.concat`, :mod:`.pack`: the paper's baselines behind the same interface.

The plan is pure and world-size independent; a loader only executes it for its rank.
"""
