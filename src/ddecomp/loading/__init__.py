"""Loading: from a dataset (or blend) to the batches of each rank, exact and resumable.

::

    curriculum, budget ─> plan ───┐   (odds and rows per bucket; the pure list of global steps)
                          plantext│   (its summary as the CLI prints it)
                                  v
    protocols, world, flat ──> base ─┬─> vsl     (DD's loader: one bucket per step)
                                     ├─> concat  (concat-and-chunk baselines, optional doc mask)
                                     └─> pack    (best-fit-decreasing packing with a doc mask)

- :mod:`.curriculum`: named odds (uniform, grow-linear, grow-p2, ...) per bucket.
- :mod:`.budget`: rows per bucket: one pass over the data, or the run of ``total_tokens``
  (bucket token shares, whole passes plus a seeded window of the next).
- :mod:`.plan`: :func:`build_plan`, a pure numpy function from bucket sizes to global steps (of
  the run, or of one pass), in the release's weighting or a layout.
- :mod:`.plantext`: a plan's summary as the table ``ddecomp plan`` prints.
- :mod:`.protocols`: the typed seams: what a loader reads of a dataset (:class:`BucketData`,
  :class:`DocumentData`), the :class:`Batch` it yields, and ``IGNORE_INDEX``.
- :mod:`.world`: where this process sits (rank, world size, local rank, workers), one explicit
  value for the loaders and the trainer; from a data-parallel process group or ``DeviceMesh``
  dimension, the ranks of one replica get the same batches.
- :mod:`.rebucket`: a dataset served at a shorter maximum, longer rows split (nothing dropped).
- :mod:`.flat`: the ``"flat"`` layout, a rows batch as one ``[1, T]`` stream with
  ``cu_seqlens`` / ``position_ids`` (the same shape every step).
- :mod:`.base`: what every loader shares: executing a plan per rank, epoch cursor, workers,
  state dict, resume.
- :mod:`.vsl`: :class:`VSLLoader`, one bucket per step, constant tokens per step.
- :mod:`.concat`, :mod:`.pack`: the paper's baselines behind the same interface.

The plan is pure and world-size independent; every loader (the baselines' plan has one bucket)
only executes it for its rank, so the plan's exactly-once proof covers them all.
"""
