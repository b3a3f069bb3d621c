"""torchtitan 0.3.0's own Trainer on DD's flat layout: a short training run with DDDataLoader.

One process (dp 1), a llama3 flavor from torchtitan's model registry (``--flavor``; its vocabulary
cut to the dataset's, rounded up to 128), ``config.dataloader = DDDataLoader.Config(DIR)``, and
torchtitan's ``Trainer.train()``: its batch generator, ``post_dataloading_process`` (the
attention masks built from our ``positions``: FlexAttention's block mask, or varlen's
``cu_seqlens``), loss, optimizer, LR schedule and ``CheckpointManager`` (DCP). Two runs:

1. ``--steps`` steps, a checkpoint every ``steps / 2``; per step the wall time between
   torchtitan's metric logs (the loss's ``.item()`` synchronises), tokens/s and the loss;
2. a fresh Trainer in another dump folder holding only run 1's middle checkpoint: torchtitan loads
   it (model, optimizer, schedule, step and our loader's state) and trains the second half again.

Checked, and written to ``--out`` (``titan_<hardware>_<date>.json`` and ``.md``): every batch the
trainer trained is the plan's next step token for token (``make_step`` of a reference
``VSLLoader``: no step skipped, repeated or reordered), each step's attention segments are the
plan's (its length ``L``, and packed pieces), the rows of those steps are distinct, the loss fell
(mean of the last quarter below the first step's), and the resumed half trained the same batches
with the same losses (rtol ``--resume-rtol``) as run 1.

**On the CPU (``--smoke``) torchtitan runs only with stand-ins**, because torchtitan 0.3.0 has no
CPU path (see :mod:`ddecomp.integrations.torchtitan`): with triton installed, ``import
torchtitan.trainer`` works, but (a) its device is ``_get_available_device_type() or "cuda"``,
read into five modules at import, so :func:`cpu_stand_ins` sets ``device_type = "cpu"`` and a
small ``device_module`` (``torch.cpu`` plus no-op memory statistics) there; (b) its two
language-model attention backends are GPU kernels (FlexAttention: "does not support backward on
CPU"; varlen: ``aten::_flash_attention_forward`` has no CPU kernel; SDPA is refused for language
models), so the smoke run uses the varlen backend with ``torch.nn.attention.varlen.varlen_attn``
replaced, in torchtitan's attention module only, by an exact SDPA over the block-diagonal causal
mask of the ``cu_seq_q`` torchtitan built from our positions. Everything else is torchtitan's
code unchanged; without triton the smoke mode stops after building the config and the loader
(through ``Config.build`` with the trainer's arguments) and says so.

    python benchmarks/gpu_torchtitan.py --smoke --out /tmp/tt     # CPU, ~1 min
    python benchmarks/gpu_torchtitan.py --data gpu-data --out $OUT  # GPU: gpu_session.sh
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))


def torch_compat() -> bool:
    """torchtitan 0.3.0's ``Trainer.train()`` calls ``torch.distributed.set_timeout`` after the
    first step (``set_pg_timeouts``), a function torch 2.13.0 does not have (it has the private
    ``distributed_c10d._set_pg_timeout``, the same arguments): without this the run stops there,
    on any device. Returns whether the stand-in was needed."""
    import torch.distributed.distributed_c10d as c10d

    if hasattr(torch.distributed, "set_timeout"):
        return False
    torch.distributed.set_timeout = c10d._set_pg_timeout  # type: ignore[attr-defined]
    return True


def cpu_stand_ins() -> None:
    """Let torchtitan 0.3.0's Trainer run on the CPU (module docstring): device globals -> cpu,
    varlen attention -> an exact SDPA over the block-diagonal causal mask."""
    import importlib

    import torch.nn.functional as F

    dev = types.SimpleNamespace(
        set_device=torch.cpu.set_device,
        current_device=lambda: 0,  # an index: barrier(device_ids=[...]) takes ints
        device_count=torch.cpu.device_count,
        synchronize=torch.cpu.synchronize,
        is_available=torch.cpu.is_available,
        get_device_name=lambda *a: "cpu",
        get_device_properties=lambda *a: types.SimpleNamespace(total_memory=1 << 34, name="cpu"),
        memory_stats=lambda *a: {},
        reset_peak_memory_stats=lambda *a: None,
        empty_cache=lambda: None,
    )
    for name in ("torchtitan.tools.utils", "torchtitan.components.metrics",
                 "torchtitan.distributed.utils", "torchtitan.distributed.parallel_dims",
                 "torchtitan.models.common.token_dispatcher"):  # fmt: skip
        m: Any = importlib.import_module(name)
        if hasattr(m, "device_type"):
            m.device_type = "cpu"
        if hasattr(m, "device_module"):
            m.device_module = dev

    def varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, 0),
                    enable_gqa=False, num_splits=None, return_aux=None):  # fmt: skip
        assert torch.equal(cu_q, cu_k), "self-attention: one set of boundaries"
        assert tuple(window_size) == (-1, 0), "causal"
        assert return_aux is None, "no LSE epilogue in llama3"
        T = q.shape[0]
        doc = torch.searchsorted(cu_q[1:-1].long(), torch.arange(T), right=True)
        mask = (doc[:, None] == doc[None, :]) & torch.ones(T, T, dtype=torch.bool).tril()
        qf, kf, vf = (x.float().transpose(0, 1) for x in (q, k, v))  # (N, T, H)
        out = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=mask, scale=scale,
                                             enable_gqa=enable_gqa)  # fmt: skip
        return out.transpose(0, 1).to(q.dtype)

    attention: Any = importlib.import_module("torchtitan.models.common.attention")
    attention.varlen_attn = varlen_attn


def smoke_dataset(root: Path) -> Path:
    """Random documents of 8-300 tokens drawn from 37 of a 2,000-token vocabulary (so the loss
    falls within a few steps), buckets 16, 32, 64."""
    from ddecomp import TokensConfig, prepare_tokens

    if not (root / "manifest.json").exists():
        rng = np.random.default_rng(0)
        docs = [np.append(rng.integers(3, 40, n - 1), 1) for n in rng.integers(8, 300, 400)]
        toks = np.concatenate(docs).astype(np.int64)
        prepare_tokens(TokensConfig(toks, root, eos_id=1, min_len=16, max_len=64, vocab_size=2000))
    return root


def make_config(a: argparse.Namespace, dump: Path, vocab: int) -> Any:
    """torchtitan's llama3 debug config with our loader, model flavor, sizes and checkpoints."""
    from torchtitan.components.checkpoint import CheckpointManager
    from torchtitan.components.loss import ChunkedLossWrapper, CrossEntropyLoss
    from torchtitan.components.optimizer import default_adamw
    from torchtitan.components.tokenizer import BaseTokenizer
    from torchtitan.components.validate import Validator
    from torchtitan.config import CompileConfig, TrainingConfig
    from torchtitan.models.llama3 import model_registry
    from torchtitan.models.llama3.config_registry import llama3_debugmodel

    from ddecomp.integrations.torchtitan import DDDataLoader

    class PreTokenized(BaseTokenizer):
        """DD's data is tokenized already: torchtitan's tokenizer slot, never called."""

        @dataclass(kw_only=True, slots=True)
        class Config(BaseTokenizer.Config):
            pass

        def __init__(self, config: Any = None, **kw: Any) -> None:
            super().__init__()

        def encode(self, *a: Any, **k: Any) -> list[int]:
            raise NotImplementedError

        decode = encode

        def get_vocab_size(self) -> int:
            return vocab

    cfg = llama3_debugmodel()
    spec = model_registry(a.flavor, attn_backend=a.attn)
    V = -(-vocab // 128) * 128
    m = spec.model
    m.vocab_size, m.tok_embeddings.num_embeddings, m.lm_head.out_features = V, V, V
    cfg.model_spec = spec
    cfg.loss = ChunkedLossWrapper.Config(loss_fn=CrossEntropyLoss.Config(global_vocab_size=V))
    cfg.training = TrainingConfig(local_batch_size=a.local_batch_size, seq_len=a.seq_len,
                                  steps=a.steps, disable_cuda_graphs=True)  # fmt: skip
    cfg.dataloader = DDDataLoader.Config(dataset_path=str(a.data), seed=a.seed,
                                         total_tokens=run_tokens(a))  # fmt: skip
    cfg.tokenizer = PreTokenized.Config()
    cfg.dump_folder = str(dump)
    cfg.debug.seed = a.seed  # the same initial weights in both runs and every rerun
    cfg.optimizer = default_adamw(lr=a.lr)
    cfg.validator = Validator.Config(enable=False)
    cfg.metrics.log_freq = 1
    cfg.checkpoint = CheckpointManager.Config(
        enable=True, interval=a.steps // 2, last_save_model_only=False, keep_latest_k=0
    )
    if a.compile:
        cfg.compile = CompileConfig(enable=True, components=["model", "loss"])
    return cfg


def run_tokens(a: argparse.Namespace) -> int:
    """The plan is the run (``--steps``): DD's curriculum cycles through its lengths in it."""
    return a.steps * a.seq_len * a.local_batch_size


def train(cfg: Any) -> dict[str, Any]:
    """torchtitan's ``Trainer.train()`` on ``cfg``; what it trained and logged, per step."""
    from torchtitan.trainer import Trainer

    trainer = cfg.build()
    assert isinstance(trainer, Trainer)
    got: dict[str, Any] = {"batches": [], "log": [], "t0": time.perf_counter()}
    gen, log = trainer.batch_generator, trainer.metrics_processor.log

    def batch_generator(data: Any) -> Any:  # records what the trainer takes, passes it on
        for inputs, labels in gen(data):
            got["batches"].append(
                (inputs["input"].clone(), inputs["positions"].clone(), labels.clone())
            )
            yield inputs, labels

    def logged(step: int, loss: float, *args: Any, **kw: Any) -> Any:
        got["log"].append((step, float(loss), time.perf_counter()))
        return log(step, loss, *args, **kw)

    trainer.batch_generator = batch_generator
    trainer.metrics_processor.log = logged
    try:
        trainer.train()
        got["loader_step"] = trainer.dataloader.loader.step
        got["first_step"] = got["log"][0][0] if got["log"] else None
    finally:
        trainer.close()
    return got


def check(a: argparse.Namespace, full: dict[str, Any], resumed: dict[str, Any]) -> dict[str, Any]:
    """The properties of the module docstring; raises AssertionError with what differs."""
    from ddecomp import VSLLoader, open_dataset

    ds = open_dataset(a.data)
    ref = VSLLoader(ds, tokens_per_step=a.seq_len * a.local_batch_size, seed=a.seed,
                    layout="flat", total_tokens=run_tokens(a))  # fmt: skip
    shape = (a.local_batch_size, a.seq_len)
    rows: set[tuple[int, int]] = set()
    lengths = []
    assert len(full["batches"]) == a.steps, (len(full["batches"]), a.steps)
    for s, (x, pos, y) in enumerate(full["batches"]):
        want = ref.make_step(0, s)
        assert torch.equal(x, want["input_ids"].reshape(shape)), f"step {s}: input"
        assert torch.equal(y, want["labels"].reshape(shape)), f"step {s}: labels"
        assert torch.equal(pos, want["position_ids"].reshape(shape)), f"step {s}: segments"
        L = int(want["seq_len"])
        lengths.append(L)
        for r in ref.rank_rows(ref.plan, s).tolist():
            rows.add((L, r))
    n_rows = sum(a.seq_len * a.local_batch_size // L for L in lengths)
    assert len(rows) == n_rows, f"{n_rows - len(rows)} rows served twice"
    half = a.steps // 2
    assert resumed["first_step"] == half + 1, f"resumed at step {resumed['first_step']}"
    assert len(resumed["batches"]) == a.steps - half
    for (x, p, y), (x2, p2, y2) in zip(full["batches"][half:], resumed["batches"], strict=True):
        assert torch.equal(x, x2), "resumed batch: input"
        assert torch.equal(p, p2), "resumed batch: positions"
        assert torch.equal(y, y2), "resumed batch: labels"
    loss = [v for _, v, _ in full["log"]]
    loss2 = [v for _, v, _ in resumed["log"]]
    diff = max(abs(u - v) / abs(u) for u, v in zip(loss[half:], loss2, strict=True))
    assert diff <= a.resume_rtol, f"resumed losses differ by {diff:.2e} (rtol {a.resume_rtol})"
    q = max(1, a.steps // 4)
    assert float(np.mean(loss[-q:])) < loss[0], f"the loss did not fall: {loss}"
    assert len(set(lengths)) >= 2, f"one length only: {set(lengths)}"  # vacuity guard
    return {"lengths": lengths, "rows": n_rows, "resume_max_rel_diff": diff}


SMOKE_NOTE = " (CPU stand-ins, see the script; step times of a tiny model: no benchmark)"


def report(a: argparse.Namespace, full: dict[str, Any], checks: dict[str, Any], hw: str,
           extra: dict[str, Any]) -> Path:  # fmt: skip
    """JSON and markdown into ``--out``; returns the markdown's path."""
    tokens = a.seq_len * a.local_batch_size
    t = [full["t0"]] + [w for _, _, w in full["log"]]
    steps = []
    for i, ((s, v, _), L) in enumerate(zip(full["log"], checks["lengths"], strict=True)):
        dt = t[i + 1] - t[i]
        steps.append(
            {"step": s, "seq_len": L, "loss": v, "time_s": dt, "tokens_per_s": tokens / dt}
        )
    steady = [r["time_s"] for r in steps[a.skip :]] or [r["time_s"] for r in steps]
    med = float(np.median(steady))
    res = {
        "date": datetime.date.today().isoformat(),
        "hardware": hw,
        "smoke": a.smoke,
        "config": {k: str(v) for k, v in vars(a).items()},
        "steps": steps,
        "median_step_s_after_skip": med, "tokens_per_s": tokens / med, **checks, **extra,
    }  # fmt: skip
    a.out.mkdir(parents=True, exist_ok=True)
    stem = f"titan_{hw.replace(' ', '-')}_{res['date']}"
    (a.out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    title = f"# torchtitan {extra['torchtitan']} Trainer on DD's flat layout"
    lines = [f"{title} ({hw}, {res['date']})",
             "", f"flavor {a.flavor}, attention {a.attn}, seq_len {a.seq_len} x local batch "
             f"{a.local_batch_size} = {tokens} tokens/step, compile {a.compile}, torch "
             f"{torch.__version__}{SMOKE_NOTE if a.smoke else ''}", "",
             f"median step {med * 1e3:.1f} ms after {a.skip} steps: {tokens / med:,.0f} tokens/s;"
             f" resume through CheckpointManager: same batches, losses within "
             f"{checks['resume_max_rel_diff']:.1e}; {checks['rows']} rows, none twice", "",
             "| step | L | loss | ms | tokens/s |", "|---:|---:|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {r['step']} | {r['seq_len']} | {r['loss']:.4f} | {r['time_s'] * 1e3:.1f} | "
              f"{r['tokens_per_s']:,.0f} |" for r in steps]  # fmt: skip
    md = a.out / f"{stem}.md"
    md.write_text("\n".join(lines) + "\n")
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, help="prepared dataset (default with --smoke: made)")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="JSON + markdown here")
    ap.add_argument("--flavor", default="1B", help="torchtitan llama3 flavor (default 1B)")
    ap.add_argument("--attn", default="flex", help="flex | flex_flash | varlen (default flex)")
    ap.add_argument("--seq-len", type=int, default=8192, help="torchtitan seq_len, tokens")
    ap.add_argument("--local-batch-size", type=int, default=2, help="rows of seq_len per step")
    ap.add_argument("--steps", type=int, default=24, help="steps of run 1 (even; default 24)")
    ap.add_argument("--skip", type=int, default=4, help="first steps left out of the median")
    ap.add_argument("--seed", type=int, default=0, help="data order and weight seed")
    ap.add_argument("--lr", type=float, default=8e-4, help="AdamW peak LR (default 8e-4)")
    ap.add_argument("--compile", action="store_true", help="torchtitan's compile of model+loss")
    ap.add_argument("--autotune", action="store_true", help="FlexAttention's max_autotune")
    ap.add_argument("--resume-rtol", type=float, default=1e-3, help="resumed vs full losses")
    ap.add_argument("--smoke", action="store_true", help="CPU: debugmodel, tiny data, 8 steps")
    a = ap.parse_args(argv)
    if a.smoke:
        a.flavor, a.attn, a.seq_len, a.local_batch_size = "debugmodel", "varlen", 128, 1
        a.steps, a.skip, a.resume_rtol, a.lr = 8, 1, 1e-5, 3e-3
    if a.steps < 2 or a.steps % 2:
        ap.error(f"--steps {a.steps} must be even and >= 2 (run 2 resumes at steps / 2)")
    tmp = Path(tempfile.mkdtemp(prefix="ddtitan-"))
    if a.data is None:
        if not a.smoke:
            ap.error("--data DIR is required without --smoke")
        a.data = smoke_dataset(tmp / "data")
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1"})  # fmt: skip
    with socket.socket() as s:  # one process; torchtitan's init_process_group rendezvous
        s.bind(("127.0.0.1", 0))
        os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    from ddecomp import open_dataset
    from ddecomp.errors import UserError
    from ddecomp.integrations.torchtitan import DDDataLoader

    ds = open_dataset(a.data)
    if not ds.vocab_size:
        raise UserError(f"{a.data}: its manifest has no vocab_size (the model's vocabulary)")
    vocab = int(ds.vocab_size)
    # as the trainer builds it (its arguments); refuses a seq_len that is no multiple of max_len
    loader = DDDataLoader.Config(dataset_path=str(a.data), seed=a.seed,
                                 total_tokens=run_tokens(a)).build(
        dp_world_size=1, dp_rank=0, tokenizer=None, seq_len=a.seq_len,
        local_batch_size=a.local_batch_size, snapshot_every_n_steps=None,
    )  # fmt: skip
    print(f"loader: {len(loader.loader)} steps per epoch, lengths {ds.bucket_lengths}", flush=True)
    try:
        import triton  # noqa: F401  (import torchtitan.trainer needs it)
    except ImportError:
        if not a.smoke:
            raise
        print("triton is not installed: torchtitan.trainer cannot be imported; smoke stops after "
              "the loader (built through Config.build with the trainer's arguments)")  # fmt: skip
        return 0
    import torchtitan

    cuda = torch.cuda.is_available()
    if not cuda:
        if not a.smoke:
            sys.exit("no CUDA device: run with --smoke for the CPU stand-ins")
        cpu_stand_ins()
    set_timeout_stand_in = torch_compat()
    if cuda and not a.autotune:  # torchtitan compiles flex_attention with max_autotune and
        # coordinate descent (its class attribute): minutes of tuning a short run cannot repay
        from torch.nn.attention.flex_attention import flex_attention
        from torchtitan.models.common.attention import FlexAttention

        FlexAttention._compiled_flex_attn = torch.compile(flex_attention)
    hw = torch.cuda.get_device_name() if cuda else f"CPU {platform.machine()}"
    full = train(make_config(a, tmp / "full", vocab))
    ck = tmp / "full" / "checkpoint" / f"step-{a.steps // 2}"
    assert ck.is_dir(), sorted(p.name for p in ck.parent.iterdir())
    shutil.copytree(ck, tmp / "resumed" / "checkpoint" / ck.name)
    resumed = train(make_config(a, tmp / "resumed", vocab))
    checks = check(a, full, resumed)
    extra = {"torchtitan": torchtitan.__version__, "torch": torch.__version__,
             "cpu_stand_ins": not cuda, "set_timeout_stand_in": set_timeout_stand_in}  # fmt: skip
    md = report(a, full, checks, hw, extra)
    print(md.read_text(), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    from ddecomp.errors import DataError, UserError

    try:
        sys.exit(main())
    except (UserError, DataError) as e:  # a wrong --seq-len, --data, ...: one line, exit 2
        sys.exit(print(f"gpu_torchtitan: {e}", file=sys.stderr) or 2)
