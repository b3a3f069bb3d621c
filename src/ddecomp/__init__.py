"""ddecomp: Dataset Decomposition for LLM pretraining (Pouransari et al., NeurIPS 2024).

The flow, one module per box::

    inputs ──> ingest ──> tokenize ──> decompose ──> format / manifest ──> dataset
    (files,    (formats,  (HF         (pure numpy:   (shards of tokens,    (open_dataset:
     URLs,      counted    tokenizers, n-1 targets    row-offset buckets,   read-only memmaps,
     default    skips)     or tokens)  in binary)     atomic writes)        rows(L, idx))
     corpus)                                                                    │
                                                            blend (several datasets as one,
                                                                   per-source factors)
                                                                                v
           curriculum ──> plan ──> loader (VSLLoader) ──> train ──> stats / plots / compare
           (odds per      (pure:   (executes the plan     (reference GPT, metrics)
            bucket)        steps)   per rank/worker)         │
                             │      baselines (concat-and-chunk, packing) share the loader interface
                             └──── stepcost (the train step timed at fixed shapes prices a plan)

``prepare`` (inputs -> ingest -> tokenize -> decompose -> write) is the only writer; everything
after reads through :func:`open_dataset`.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

from .blend import Blend
from .curriculum import CURRICULA, Curriculum, resolve_curriculum
from .dataset import Dataset, open_dataset
from .decompose import CONVENTION, decompose, decompose_corpus
from .errors import DataError, UserError
from .plan import Plan, build_plan
from .prepare import PrepareConfig, prepare, prepare_tokens
from .trainconfig import ModelConfig, TrainConfig
from .world import World

# Names whose modules import torch are loaded on first use, so `prepare` and `stats` stay light.
_LAZY = {
    "VSLLoader": "loader",
    "ConcatChunkLoader": "baselines",
    "PackedLoader": "baselines_pack",
    "GPT": "model",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'ddecomp' has no attribute {name!r}")


__all__ = [
    "CONVENTION",
    "CURRICULA",
    "GPT",
    "Blend",
    "ConcatChunkLoader",
    "Curriculum",
    "DataError",
    "Dataset",
    "ModelConfig",
    "PackedLoader",
    "Plan",
    "PrepareConfig",
    "TrainConfig",
    "UserError",
    "VSLLoader",
    "World",
    "__version__",
    "build_plan",
    "decompose",
    "decompose_corpus",
    "open_dataset",
    "prepare",
    "prepare_tokens",
    "resolve_curriculum",
]
