"""Integrations: ddecomp's loaders inside the trainers teams already run, one module per framework.

::

    loading/ (VSLLoader, baselines: plan, rank slice, state)
      ├─> hf_batches ─> hf ─> transformers.Trainer   (hf_loss: logits -> exact loss;
      │                                               hf_state: loader state in checkpoint-N)
      ├─> lightning ───────> Lightning Trainer      (DDDataModule, dd_loss)
      ├─> olmo_core ───────> OLMo-core's Trainer    (a DataLoaderBase over the plan)
      └─> (layout="flat") ─> torchtitan ─> torchtitan's trainer (a BaseDataLoader, DCP state)

    one global step = one optimizer update; the loss is normalised by the step's global targets

- :mod:`.hf`: :class:`~ddecomp.integrations.hf.DDTrainer`, a ``transformers.Trainer`` whose train
  (and eval) data is a ddecomp loader: no ``accelerator.prepare`` of the loader, one global step
  per optimizer update, the loss normalised by the step's global target count, the loader state
  saved in every checkpoint and restored on resume (no batch skipping).
- :mod:`.hf_batches`: the settings DDTrainer refuses, and a global step's batch cut into
  ``gradient_accumulation_steps`` micro-batches.
- :mod:`.hf_loss`: the forward pass of an HF causal LM or the reference GPT on ddecomp's already
  shifted labels (every target trained once), and the check that a model masks packed tail rows.
- :mod:`.hf_state`: the loader state file of a Trainer checkpoint, written atomically, read
  with every field checked.
- :mod:`.lightning`: ``DDDataModule(train_loader, val_loader=None)``, a ``LightningDataModule``
  that hands Lightning the ddecomp loader itself (never a ``DataLoader``, so no
  ``DistributedSampler`` is added), places it at the trainer's rank, saves its state in every
  checkpoint and restores it on ``fit(ckpt_path=...)`` at exactly the next global step; and
  ``dd_loss(logits, batch)``, the step's loss normalised over every rank's targets.
- :mod:`.olmo_core`: :class:`~ddecomp.integrations.olmo_core.DDDataLoader`, OLMo-core's
  ``TextDataLoaderBase`` contract (global batch in tokens, dp rank / world size, ``reshuffle``,
  state in OLMo-core's checkpoints) serving ddecomp's plan with exact ``labels`` and
  ``doc_lens`` / ``max_doc_lens`` for packed tail rows. Extra ``ddecomp[olmo-core]``.
- :mod:`.torchtitan`: :class:`~ddecomp.integrations.torchtitan.DDDataLoader`, DD's flat layout as
  torchtitan 0.3.0's dataloader (``pip install "ddecomp[torchtitan]"``), its state in
  torchtitan's DCP checkpoints.

Each framework is an optional extra (``pip install "ddecomp[hf]"``, ``[lightning]``,
``[olmo-core]``, ``[torchtitan]``) imported only by its own module: ``import ddecomp`` and
``import ddecomp.integrations`` import none of them.
"""
