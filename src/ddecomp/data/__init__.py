"""The dataset on disk: its format, and everything that reads it without training.

::

    layout ────┬─> dataset ─> blend ─> blendstats  (several as one; per-source bucket shares)
    tailrows ──┤     │  ^         (tailindex: a split's tail rows loaded and checked)
    tokenfile ─┤     │  └── remote    (a URL's manifest and index files, checked and cached)
    rowstarts ─┘     │                (row offsets: in memory, or mapped per shard)
    chunks ─> remote_tokens ─┘        (token bytes on demand: hashed chunks, bounded cache)
                     ├─> verify       (sizes, sha256, invariants against the manifest)
                     └─> stats        (bucket shares, drops, lengths, attention cost)

- :mod:`.layout`: file names, format version, manifest reading, the fingerprint.
- :mod:`.files`: the files checked before they are trusted (inside DIR, sizes, npy headers).
- :mod:`.tailrows`: packed tail rows (``--tails pack``): their files, checks and gather.
- :mod:`.tailindex`: a split's tail rows read from their files, checked, in global token offsets.
- :mod:`.tokenfile`: a shard's tokens, from its own file or a range of an ``--in-place`` file
  (one ``tokens_file``, or several ``tokens_files`` each shard names by index).
- :mod:`.dataset`: :func:`open_dataset` -> :class:`Dataset`, read-only memmaps, ``rows(L, idx)``.
- :mod:`.rowstarts`: a bucket's row offsets, in memory or (above 2^26 rows) mapped per shard.
- :mod:`.remote`: datasets in object storage: manifest, index files (sha256-checked, cached).
- :mod:`.chunks`: token bytes of a remote dataset in hashed chunks, a cache of ``cache_limit``.
- :mod:`.remote_tokens`: a remote dataset's rows read on demand, prefetch of steps ahead.
- :mod:`.blend`: :class:`Blend`, several datasets as one at per-source repetition factors.
- :mod:`.verify`: ``ddecomp verify``.
- :mod:`.stats`: ``ddecomp stats``.
- :mod:`.blendstats`: ``ddecomp stats DIR DIR ...``: a blend's per-source bucket shares; the
  sources' names.

Nothing here imports torch; :mod:`ddecomp.preparing` is the only writer of these files.
"""
