"""Integrations: ddecomp's loaders inside the trainers teams already run, one module each.

::

    loading/ (VSLLoader, baselines) ──> lightning ──> Lightning Trainer (DDDataModule, dd_loss)

- :mod:`.lightning`: ``DDDataModule(train_loader, val_loader=None)``, a ``LightningDataModule``
  that hands Lightning the ddecomp loader itself (never a ``DataLoader``, so no
  ``DistributedSampler`` is added), places it at the trainer's rank, saves its state in every
  checkpoint and restores it on ``fit(ckpt_path=...)`` at exactly the next global step; and
  ``dd_loss(logits, batch)``, the step's loss normalised over every rank's targets.

Every framework is an optional extra (``pip install 'ddecomp[lightning]'``) imported inside its
module on first use: ``import ddecomp`` and ``import ddecomp.integrations`` import none of them.
"""
