"""Preparing: the only writer. Raw input in, a dataset directory out.

One ``prepare`` run, module by module::

    inputs ─> ingest ─> tokenize ─────┐               (text: files, URLs, the default corpus)
                        pretokenized ─┤               (a flat token file with EOS after each doc)
                                      v
              pipeline ─> pool ─> shards ─> manifest  (plan shards, run them in processes,
                 │                  │                  write each shard, then the manifest last)
              outdir             progress             (own the output directory; report progress)

- :mod:`.inputs`: where the files are (local paths, URLs through fsspec, the default corpus).
- :mod:`.ingest`: documents out of each format, every bad record counted by reason.
- :mod:`.tokenize`: HF tokenizers, EOS/BOS, deterministic BPE training, fast encoding.
- :mod:`.pretokenized`: already-tokenized input (Megatron / OLMo-core / nanoGPT token files).
- :mod:`.pipeline`: :func:`prepare` and :func:`prepare_tokens`, the validated config, resume.
- :mod:`.pool`: shard jobs and the process pool that runs them.
- :mod:`.shards`: one shard's document index, split, decomposition and files.
- :mod:`.outdir`: claiming the output directory (refuse another run's arguments, resume ours).
- :mod:`.manifest`: totals, drops by reason and the fingerprint, assembled from shard records.
- :mod:`.progress`: a bar on a terminal, plain lines elsewhere.

Nothing here imports torch.
"""
