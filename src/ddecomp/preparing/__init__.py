"""Preparing: the only writer. Raw input in, a dataset directory out.

One ``prepare`` run, module by module::

    inputs ─> ingest ─> tokenize ─────┐       (text: files, URLs, the default corpus)
                        (seams)       │       (a long document cut where its ids hold)
                        pretokenized ─┤       (flat token files with EOS after each doc)
                        (tokencheck)  │       (fromtokens: several files, one dataset)
                        megatron ─────┤       (Megatron .idx + .bin, copied or in place)
                                      v
    config ─> pipeline ─> shardrun ─> pool ──────> shards ─> manifest
                 │           │   └──> ray_engine ┘   │ (tails)
              outdir      progress              remote_out (--out URL: upload, manifest last)

    (validated arguments; plan the shards; run them in processes or Ray tasks, each writing its
    shard; own the output directory; report progress; write the manifest last)

- :mod:`.inputs`: where the files are (local paths, URLs through fsspec, the default corpus).
- :mod:`.ingest`: documents out of each format, every bad record counted by reason.
- :mod:`.tokenize`: HF tokenizers, EOS/BOS, deterministic BPE training, fast encoding.
- :mod:`.seams`: where a very long document can be cut without changing its tokens (verified).
- :mod:`.pretokenized`: already-tokenized input (Megatron / OLMo-core / nanoGPT token files).
- :mod:`.tokencheck`: ``--from-tokens`` flags that cannot be right (EOS, dtype, vocabulary).
- :mod:`.fromtokens`: :func:`prepare_tokens`: ``--from-tokens FILE ...`` (one document stream
  per file, shards never across a file), copied or ``--in-place``.
- :mod:`.perinput`: ``--source-per-input``: each input's files, distinct names, no file in two
  sources, the manifest's ``sources``.
- :mod:`.megatron`: Megatron indexed datasets (``.idx`` read and checked, ``.bin`` in place or
  copied with EOS appended).
- :mod:`.config`: :class:`PrepareConfig`, :class:`TokensConfig` and :class:`MegatronConfig`,
  frozen and validated.
- :mod:`.pipeline`: :func:`prepare` (text; :func:`prepare_tokens` re-exported), data checks,
  resume.
- :mod:`.shardrun`: runs a prepare's shard jobs (resume, engine, progress), writes the manifest.
- :mod:`.pool`: shard jobs and the process pool that runs them.
- :mod:`.ray_engine`: the same jobs as Ray tasks on a cluster (optional: ``ddecomp[ray]``).
- :mod:`.shards`: one shard's document index, split, decomposition and files.
- :mod:`.tails`: ``--tails pack``: the pieces below ``min`` packed (seeded BFD) into tail rows.
- :mod:`.outdir`: claiming the output directory (refuse another run's arguments, resume ours).
- :mod:`.remote_out`: ``--out URL``: shards staged locally and uploaded, the record and the
  manifest last, the prefix claimed like a directory.
- :mod:`.manifest`: totals, drops by reason and the fingerprint, assembled from shard records.
- :mod:`.progress`: a bar on a terminal, plain lines elsewhere.

Nothing here imports torch.
"""
