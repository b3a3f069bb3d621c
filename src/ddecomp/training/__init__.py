"""Training: the reference GPT, one train step, and the loop that compares data pipelines.

::

    config ─> builders ─> loop ─> checkpoint, runlog, evaluate
                │          ├─> sources (a blend's loss and targets per source)
                │          ├─> feed (batches across epochs, each step's micro-batches)
                │          ├─> hostcopy, microbatch (one copy in, micro-batches out)
                │          │
    model <─ attention     └─> step (one optimizer step) <─ stepcost (prices a plan)
                 distributed (the process group)

- :mod:`.config`: validated :class:`ModelConfig` and :class:`TrainConfig` (no torch import).
- :mod:`.recipe`: named recipes (``release``: the paper's optimiser and model settings) under
  explicit flags.
- :mod:`.model`: a compact GPT (RoPE, SwiGLU, pre-norm), FLOP counts.
- :mod:`.attention`: causal SDPA, document masks (flex block mask on GPU, dense on CPU).
- :mod:`.builders`: the loader of each method, AdamW, the cosine schedule, shape warm-up.
- :mod:`.loop`: :func:`train`, the reference trainer.
- :mod:`.feed`: the batches a run trains on, epoch after epoch, and each step's micro-batches
  with their attention masks.
- :mod:`.microbatch`: a step's batch cut into micro-batches, the loss normalised by the step's
  targets (same gradients as the unsplit step).
- :mod:`.hostcopy`: one host-to-device copy per batch through a pinned staging buffer.
- :mod:`.stepcost`: one train step, timed at fixed shapes, to price a plan before training.
- :mod:`.checkpoint`, :mod:`.runlog`, :mod:`.evaluate`: what a run saves, logs and measures.
- :mod:`.distributed`: the trainer's view of ``torch.distributed``.
- :mod:`.sources`: per-source training loss and targets per step, held-out loss per source and
  length (a blend's rows carry their source).
"""
