"""The dataset on disk: its format, and everything that reads it without training.

::

    tailrows ─> layout ─> dataset ─> blend   (tail rows; names and manifest; memory-mapped
                                             buckets; several datasets as one)
                │
                ├─> verify           (sizes, sha256, invariants against the manifest)
                └─> stats            (bucket shares, drops, lengths, attention cost)

- :mod:`.layout`: file names, format version, manifest reading, the fingerprint.
- :mod:`.tailrows`: packed tail rows (``--tails pack``): their files, checks and gather.
- :mod:`.dataset`: :func:`open_dataset` -> :class:`Dataset`, read-only memmaps, ``rows(L, idx)``.
- :mod:`.blend`: :class:`Blend`, several datasets as one at per-source repetition factors.
- :mod:`.verify`: ``ddecomp verify``.
- :mod:`.stats`: ``ddecomp stats``.

Nothing here imports torch; :mod:`ddecomp.preparing` is the only writer of these files.
"""
