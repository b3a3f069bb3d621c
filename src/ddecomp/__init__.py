"""ddecomp: Dataset Decomposition for LLM pretraining (Pouransari et al., NeurIPS 2024).

Five stages, one subpackage each; data flows left to right and down, never back::

  preparing/ (the only writer)                      data/ (the dataset on disk)
  inputs ─> ingest ─> tokenize ──┐                  layout (names, version, manifest)
                   pretokenized ─┤                    │
                                 v                    v
  pipeline ─> pool ─> shards ─> manifest  ══════>  dataset ─> blend
     │                  │          (decompose)        │  ├─> verify
  outdir            progress                          │  └─> stats
                                                      v
  loading/ (batches per rank)                       training/ (the reference trainer)
  curriculum ─> plan ──> vsl                        config ─> builders ─> loop
  world ──────> base ─┬> vsl                        model <─ attention     ├─> checkpoint
                      ├> concat   ═══ batches ════> step <─ stepcost       ├─> runlog
                      └> pack                       distributed            └─> evaluate
                                                                           v
                                                    evaluation/: tasks ─> scoring ─> runmodel
                                                    reporting/: plots, compare
  cli/: prepare, inspect (verify, stats), plan, train, eval, compare; blend_args

  top level: decompose (the pure decomposition), binpack (best-fit decreasing), attention_cost
  (attended query-key pairs), permutation (seeded O(1)-memory row orders), errors, io (atomic
  writes, sha256), dirlock (one writer per directory), version

- ``binpack``: best-fit-decreasing packing (the pack baseline's bins, ``--tails pack``'s rows).
- ``permutation``: seeded bijections of ``[0, n)`` (keyed Feistel network, cycle-walking): a
  plan's and a blend's row orders computed per position, nothing built per row.
- ``decompose``: pure numpy, a document of n tokens -> power-of-two pieces of its n - 1 targets
  (``docs/method.md`` section 2 states the one-token-overlap convention).
- :mod:`ddecomp.preparing` writes a dataset directory; everything after reads it through
  :func:`open_dataset` (:mod:`ddecomp.data`), never writing it.
- :mod:`ddecomp.loading` turns a dataset or :class:`Blend` into batches: a pure plan of global
  steps, executed per rank and worker; the baselines share its interface.
- :mod:`ddecomp.training` trains the reference GPT on any loader; :mod:`ddecomp.evaluation`
  runs retrieval tasks (and lm-eval) on a trained run; :mod:`ddecomp.reporting` draws and
  compares. Each subpackage's docstring draws its own modules.

Importing ``ddecomp`` does not import torch: the loaders and the model load on first use.
"""

from importlib import import_module
from typing import Any

from ddecomp.data.blend import Blend
from ddecomp.data.dataset import Dataset, open_dataset
from ddecomp.decompose import CONVENTION, decompose, decompose_corpus
from ddecomp.errors import DataError, UserError
from ddecomp.loading.curriculum import CURRICULA, Curriculum, resolve_curriculum
from ddecomp.loading.plan import Plan, build_plan
from ddecomp.loading.world import World
from ddecomp.preparing.pipeline import PrepareConfig, TokensConfig, prepare, prepare_tokens
from ddecomp.training.config import ModelConfig, TrainConfig
from ddecomp.version import __version__

# Names whose modules import torch are loaded on first use, so `prepare` and `stats` stay light.
_LAZY = {
    "VSLLoader": "loading.vsl",
    "ConcatChunkLoader": "loading.concat",
    "PackedLoader": "loading.pack",
    "GPT": "training.model",
}
# Modules that were public before the stage subpackages; `ddecomp.stepcost.price_plan` still works.
_LAZY_MODULES = {"stepcost": "training.stepcost"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    if name in _LAZY_MODULES:
        return import_module(f".{_LAZY_MODULES[name]}", __name__)
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
    "TokensConfig",
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
