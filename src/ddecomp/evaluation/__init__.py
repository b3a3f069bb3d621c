"""Evaluation: what a trained run can do, beyond its validation loss.

::

    tasks ─> scoring ─> runmodel ─> RUN/eval_<task>.json ─> reporting.compare
    (examples)  (multiple choice)   (the run's GPT and held-out split)
    lm_eval_model (the run's GPT as an lm-evaluation-harness model; optional extra ``eval``)

- :mod:`.tasks`: long-context retrieval examples from held-out documents (``passkey``,
  ``kv-retrieval``), exact lengths, seeded per example (pure numpy).
- :mod:`.scoring`: multiple choice by summed log-likelihood; accuracy per length and depth.
- :mod:`.runmodel`: a run's GPT from its config and latest checkpoint, its held-out split, and
  ``ddecomp eval`` (:func:`~ddecomp.evaluation.runmodel.evaluate_run`).
- :mod:`.lm_eval_model`: :class:`DDecompLM`, registered with lm-eval as ``ddecomp`` (imported
  only when lm-eval is installed and the module is imported).
"""
