"""ddecomp: Dataset Decomposition for LLM pretraining (Pouransari et al., NeurIPS 2024).

The flow, one module per box::

    ingest ──> tokenize ──> decompose ──> format / manifest ──> dataset (open_dataset)
    (files,     (HF         (pure numpy:   (shards of tokens,     (read-only memmaps,
     default     tokenizers, n-1 targets    row-offset buckets,    rows(L, idx))
     corpus)     or tokens)  in binary)     atomic writes)              │
                                                                        v
           curriculum ──> plan ──> loader (VSLLoader) ──> train ──> stats / plots / compare
           (odds per      (pure:   (executes the plan     (reference GPT, metrics)
            bucket)        steps)   per rank/worker)
                                    baselines (concat-and-chunk, packing) share the loader interface

``prepare`` (ingest -> tokenize -> decompose -> write) is the only writer; everything after
reads through :func:`open_dataset`.
"""

from .decompose import CONVENTION, decompose, decompose_corpus
from .errors import DataError, UserError

__version__ = "0.1.0"

__all__ = [
    "CONVENTION",
    "DataError",
    "UserError",
    "__version__",
    "decompose",
    "decompose_corpus",
]
