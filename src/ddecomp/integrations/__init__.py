"""Integrations: ddecomp's loaders inside the trainers teams already run, one module per framework.

::

    Dataset / Blend ─> VSLLoader (the plan: one bucket per global step, exactly once, resumable)
                           │
                           └─> olmo_core  (OLMo-core's Trainer: a DataLoaderBase over the plan)

- :mod:`.olmo_core`: :class:`~ddecomp.integrations.olmo_core.DDDataLoader`, OLMo-core's
  ``TextDataLoaderBase`` contract (global batch in tokens, dp rank / world size, ``reshuffle``,
  state in OLMo-core's checkpoints) serving ddecomp's plan with exact ``labels`` and
  ``doc_lens`` / ``max_doc_lens`` for packed tail rows. Extra ``ddecomp[olmo-core]``.

Each module imports its framework itself, at its top: ``import ddecomp`` (and this package) never
imports a framework; importing ``ddecomp.integrations.<framework>`` needs that framework's extra.
"""
