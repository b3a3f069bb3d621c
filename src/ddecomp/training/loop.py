"""The reference trainer: one GPT, four ways to feed it, identical everything else.

``train(TrainConfig(data=DIR, out=RUN, method=...))`` trains the :mod:`ddecomp.training.model` GPT
on a
prepared dataset and writes ``RUN/config.json``, ``RUN/metrics.jsonl`` (one line per step),
``RUN/eval.jsonl`` (held-out losses, :mod:`ddecomp.training.evaluate`), ``RUN/checkpoints/`` and
``RUN/summary.json``. The methods differ only in the loader (and the attention mask it implies):

==========  ==============================================  ===========================
method      loader                                          attention
==========  ==============================================  ===========================
dd          ``VSLLoader`` (one bucket length per step)      causal (rows are one doc)
concat      ``ConcatChunkLoader(seq_len=max_len)``          causal across documents
concat-dm   ``ConcatChunkLoader(..., doc_mask=True)``       document mask
pack        ``PackedLoader(seq_len=max_len)`` (BFD)         document mask
==========  ==============================================  ===========================

Tokens per step are the same for every method, so the run length in steps is
``tokens // tokens_per_step`` and one cosine learning-rate schedule with linear warmup spans all of
it (not one per curriculum cycle). The loss of a step is the mean over every target token of every
rank (padding excluded): each rank divides its sum by the global count, and DDP's gradient mean
then equals the single-process gradient of the same global batch. ``micro_batch_tokens`` splits
a rank's share into forward/backward passes of at most that many tokens with the same scale
(:mod:`ddecomp.training.microbatch`): the same gradient at a fraction of the activation memory.
Each batch crosses to the device in one copy through a pinned buffer
(:mod:`ddecomp.training.hostcopy`).

Time accounting: ``elapsed_s`` counts only training steps (loading, forward, backward, optimizer);
evaluation, checkpoints and ``--compile`` warm-up are reported apart in the summary, so runs are
compared on the work the method changes. The machine synchronises once per step (the loss is read
back for the log), which the step times include. With ``--compile`` the summary also counts the
graphs compiled inside the timed loop (``graphs_compiled_in_loop``): 0 when the warm-up covered
every shape, as tested on CPU for DD's per-bucket shapes and the document-masked baselines;
``graphs_compiled`` counts all: one per bucket length in the ``rows`` layout, one for the run in
the ``flat`` layout (block-diagonal through ``cu_seqlens``; ``attention.make_flat_mask``).

Exact resume: a checkpoint holds model, optimizer, scheduler, loader state and RNG states; a
resumed run truncates the logs to the checkpoint's step and continues. On CPU with
``deterministic=True`` its losses equal the uninterrupted run's bit for bit (tested).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from ddecomp.attention_cost import causal_pairs, doc_mask_pairs
from ddecomp.data.blend import describe_data, open_sources
from ddecomp.dirlock import DirLock
from ddecomp.errors import UserError
from ddecomp.loading.protocols import IGNORE_INDEX, BucketData
from ddecomp.loading.world import World
from ddecomp.training.builders import (
    build_loader,
    build_optimizer,
    check_flat_fits,
    cosine_schedule,
    warm_shapes,
)
from ddecomp.training.checkpoint import (
    DeferredInterrupt,
    latest_checkpoint,
    load_checkpoint,
    restore,
    rng_state,
    save_checkpoint,
)
from ddecomp.training.config import METHODS as METHODS
from ddecomp.training.config import RESUME_ABSENT, RESUME_FIXED, TrainConfig
from ddecomp.training.distributed import (
    all_gather_object,
    all_sum,
    barrier,
    close_world,
    init_world,
    resolve_device,
)
from ddecomp.training.evaluate import EvalConfig, eval_lengths, evaluate
from ddecomp.training.feed import batches_forever, micro_batches
from ddecomp.training.hostcopy import HostToDevice
from ddecomp.training.microbatch import row_slices
from ddecomp.training.model import (
    GPT,
    model_config,
    num_params,
    train_flops,
)
from ddecomp.training.runlog import RunLog, open_run_dir, peak_flops_for
from ddecomp.training.sources import SourceMetrics
from ddecomp.training.step import check_ids, train_step


def _configure_determinism(cfg: TrainConfig, device: torch.device) -> None:
    if cfg.deterministic:
        if device.type == "cuda":
            import os

            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _compiled_graphs() -> int:
    """Graphs torch.compile has built in this process so far (the evaluation runs uncompiled, so
    any growth during the loop is a recompilation that the step times pay for)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _check_resume(saved: dict[str, Any], cfg: TrainConfig, fingerprint: str) -> None:
    now = json.loads(json.dumps(asdict(cfg)))  # the checkpoint's config went through JSON too
    for k in RESUME_FIXED:
        was = saved["config"].get(k, RESUME_ABSENT.get(k))
        if was != now[k]:
            raise UserError(
                f"--resume: {k} was {was!r} in the checkpoint, now {now[k]!r}; "
                "use the same value or start a new run with another --out"
            )
    if saved["fingerprint"] != fingerprint:
        raise UserError(
            f"--resume: the dataset changed (fingerprint {saved['fingerprint'][:12]} in the "
            f"checkpoint, {fingerprint[:12]} now); resume on the same prepared data"
        )


def _no_eval_reason(cfg: TrainConfig, val: BucketData, ecfg: EvalConfig) -> str | None:
    """Why this run will never be evaluated (no held-out piece at a trained length), or None."""
    if eval_lengths(list(val.bucket_lengths), ecfg):
        return None
    dirs = " ".join(cfg.data_dirs)
    return (
        f"{dirs} has no validation pieces up to length {ecfg.max_len}: this run will not be "
        "evaluated and `ddecomp compare` cannot rank it; add a split with `ddecomp prepare "
        f"INPUT ... --out DIR --val-fraction 0.02 --overwrite` (the inputs and options used "
        "before)"
    )


def train(cfg: TrainConfig, world: World | None = None) -> dict[str, Any]:
    """Run (or resume) one training run; returns the summary also written to ``summary.json``."""
    world = world or World.detect()
    device = resolve_device(cfg.device, world)
    init_world(world, device)
    try:
        with (
            DirLock(Path(cfg.out), "train", enabled=world.is_main) as lock,  # one writer per RUN
            DeferredInterrupt(enabled=not world.distributed) as sigint,
        ):
            summary = _train(cfg, world, device, lock, sigint)
        # Every rank reaches the end before any tears its process group down: a gloo peer that
        # closes its connections while another still writes its summary aborts the latter
        # ("terminate called without an active exception"). Not on errors: peers would wait.
        barrier(world)
        return summary
    finally:
        close_world(world)


def _train(
    cfg: TrainConfig, world: World, device: torch.device, lock: DirLock, sigint: DeferredInterrupt
) -> dict[str, Any]:
    _configure_determinism(cfg, device)
    check_flat_fits(cfg, world, device)  # before any data is read
    ds = open_sources(cfg.data_dirs, cfg.factors, cfg.shares, cfg.seed, split="train")
    val = ds.for_split("val")  # a blend's held-out data in the same mix
    max_len = cfg.max_len or ds.max_len
    if max_len > ds.max_len or max_len < ds.min_len:
        raise UserError(
            f"--max-len {max_len} is outside the dataset's range {ds.min_len}..{ds.max_len}"
        )
    ecfg = EvalConfig(tokens_per_length=cfg.eval_tokens, max_len=max_len, seed=0)
    no_eval = _no_eval_reason(cfg, val, ecfg)
    run = Path(cfg.out)
    row_slices(1, max_len, cfg.micro_batch_tokens)  # refuses a micro-batch below one row now
    lock.acquire()  # a refused run removes the directory it created (if still empty)
    latest = latest_checkpoint(run) if cfg.resume else None
    metrics = run / "metrics.jsonl"
    if not cfg.resume and metrics.is_file() and metrics.stat().st_size:  # a refused run: empty
        raise UserError(
            f"{run} already holds a run; pass --resume to continue it or use a new --out"
        )
    if world.is_main:
        open_run_dir(run)  # an unwritable --out fails now, not after the setup

    loader = build_loader(cfg, ds, max_len, world)
    mcfg = model_config(cfg.size, ds.vocab_size, **cfg.model_kwargs())
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    raw = GPT(mcfg).to(device)
    opt = build_optimizer(raw, cfg, device)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, cosine_schedule(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
    )
    step, elapsed, epoch, resumed = 0, 0.0, 0, False
    if latest is not None:
        state = load_checkpoint(latest)
        _check_resume(state, cfg, ds.fingerprint)
        rngs = state["rng"]
        restore(
            latest.path,
            state,
            {"model": raw, "optimizer": opt, "scheduler": sched, "loader": loader},
            rngs[world.rank] if len(rngs) == world.world_size else rngs[0],
        )
        step, elapsed = state["step"], state["elapsed_s"]
        epoch, resumed = int(state["loader"].get("epoch", 0)), True
    elif cfg.resume and world.is_main:
        print(f"ddecomp train: no checkpoint in {run}, starting from step 0")
    model: torch.nn.Module = raw
    compile_s, graphs_start = 0.0, _compiled_graphs()
    if cfg.compile:
        model = torch.compile(raw, dynamic=False)  # type: ignore[assignment]
    if world.distributed:
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    log = RunLog(run, world.is_main, cfg, resume_step=step)
    log.write_config(
        {
            "train": asdict(cfg),
            "model": asdict(mcfg),
            "params": num_params(raw),
            "world_size": world.world_size,
            "device": str(device),
            "steps": cfg.steps,
            "max_len": max_len,
            "dataset": describe_data(ds),
            "loader": type(loader).__name__,
            "torch": torch.__version__,
        }
    )
    peak = cfg.peak_flops or peak_flops_for(device)
    if no_eval:
        log.skip_eval(no_eval)  # now, not after the whole run
    if cfg.compile:
        compile_s = warm_shapes(model, loader, cfg, world, device, mcfg.vocab_size, max_len)
    graphs_before = _compiled_graphs()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stop = cfg.stop_after or cfg.steps
    to_device = HostToDevice(device)
    per_source = SourceMetrics.for_data(ds, device)  # a blend: loss and targets per source
    stream = batches_forever(loader, epoch, resumed)
    log.open_progress(step, cfg.steps)
    eval_s = ckpt_s = 0.0
    model.train()

    def do_eval() -> None:
        nonlocal eval_s
        t = time.perf_counter()
        res = evaluate(raw, val, ecfg, device, world)
        eval_s += time.perf_counter() - t
        log.eval(res, step, step * cfg.tokens_per_step, elapsed)

    def do_checkpoint() -> None:
        nonlocal ckpt_s
        t = time.perf_counter()
        rngs = all_gather_object(rng_state(), world)
        if world.is_main:
            save_checkpoint(
                run,
                step,
                {
                    "model": raw.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "loader": loader.state_dict(),
                    "rng": rngs,
                    "step": step,
                    "elapsed_s": elapsed,
                    "config": asdict(cfg),
                    "fingerprint": ds.fingerprint,
                },
                keep=cfg.keep_checkpoints,
            )
        barrier(world)
        ckpt_s += time.perf_counter() - t

    sigint.arm()  # Ctrl-C from here on: finish the step, checkpoint, stop
    while step < stop:
        t0 = time.perf_counter()
        batch = next(stream)
        check_ids(batch, mcfg.vocab_size, step + 1)
        # One host-to-device copy of the loader's [B, L + 1] buffer, sliced on the device;
        # input_ids contiguous (a compiled model guards on strides, warm_shapes compiled those).
        x, y, pos = to_device(batch)
        L = batch["seq_len"]
        B = x.numel() // L  # rows of L (a flat batch is [1, B * L])
        pairs = causal_pairs(L, B)
        if cfg.doc_masked or "cu_seqlens" in batch:  # pack, concat-dm, DD's tail rows
            pairs = doc_mask_pairs(batch["cu_seqlens"].numpy(), L, B * L)
        micro = micro_batches(batch, x, y, pos, cfg, device)
        targets = int((batch["labels"] != IGNORE_INDEX).sum())  # on the host: no device sync
        counts = torch.tensor([targets, pairs], dtype=torch.float64, device=device)
        all_sum(counts, world)  # global targets and attended pairs of this step
        lr = sched.get_last_lr()[0]
        row_loss = None if per_source is None or "source" not in batch else per_source.row_buffer(B)
        loss_sum, grad_norm = train_step(
            model,
            raw.parameters(),
            opt,
            sched,
            micro,
            counts[0],
            world.world_size,
            cfg.grad_clip,
            cfg.z_loss,
            row_loss,
        )
        total = all_sum(loss_sum.double().reshape(1), world)
        loss = float(total[0] / counts[0])
        dt = time.perf_counter() - t0
        step += 1
        elapsed += dt
        flops = train_flops(mcfg, B * L * world.world_size, int(counts[1]))
        by_source = {}
        if per_source is not None and row_loss is not None:
            by_source = per_source.record(batch, row_loss, world)
        log.step(
            {
                "step": step,
                "seq_len": L,
                "loss": loss,
                "lr": lr,
                "tokens": step * cfg.tokens_per_step,
                "elapsed_s": elapsed,
                "step_s": dt,
                "tokens_per_s": cfg.tokens_per_step / dt,
                "grad_norm": float(grad_norm),
                "flops": flops,
                "mfu": flops / dt / (peak * world.world_size) if peak else None,
                **by_source,
            }
        )
        if not math.isfinite(loss):
            raise UserError(
                f"loss is {loss} at step {step}; lower --lr (now {cfg.lr}) or raise --warmup"
            )
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
            do_eval()
        periodic = cfg.checkpoint_every and step % cfg.checkpoint_every == 0
        if cfg.checkpoints and (periodic or step == stop or sigint.hit):
            do_checkpoint()
        if sigint.hit:
            raise KeyboardInterrupt  # after its checkpoint: --resume continues from this step
    finished = step >= cfg.steps
    if finished:
        do_eval()
    summary = {
        "method": cfg.method,
        "size": cfg.size,
        "finished": finished,
        "steps": step,
        "tokens": step * cfg.tokens_per_step,
        "elapsed_s": elapsed,
        "tokens_per_s": step * cfg.tokens_per_step / elapsed if elapsed else None,
        "eval_s": eval_s,
        "checkpoint_s": ckpt_s,
        "compile_s": compile_s,
        "graphs_compiled_in_loop": _compiled_graphs() - graphs_before if cfg.compile else None,
        "graphs_compiled": _compiled_graphs() - graphs_start if cfg.compile else None,
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        ),
        "params": num_params(raw),
        "world_size": world.world_size,
        "loader": loader.summary(),
    }
    log.close(summary)
    return log.summary
