"""A trained run as an lm-evaluation-harness model: ``lm_eval --model ddecomp``.

Needs the ``eval`` extra (``pip install "ddecomp[eval]"``, lm-eval 0.4.13); importing this module
imports lm-eval and registers :class:`DDecompLM` under the name ``ddecomp``. From Python::

    import lm_eval
    import ddecomp.evaluation.lm_eval_model  # registers "ddecomp"

    lm_eval.simple_evaluate(model="ddecomp", model_args="run=runs/dd,device=cpu", tasks=[...])

From the shell, ``python -m ddecomp.evaluation.lm_eval_model --model_args run=runs/dd --tasks
...`` runs lm-eval's own command line with the model registered (``--model ddecomp`` added).

The model is the run's reference GPT at its latest checkpoint
(:func:`ddecomp.evaluation.runmodel.load_run`); the text goes through the tokenizer its dataset
was prepared with (``DIR/tokenizer.json``; a dataset prepared ``--from-tokens`` has none and is
refused in one line). ``max_length`` defaults to the longest sequence the run trained on.

- ``loglikelihood``: ``(context, continuation)`` -> (summed log-probability of the
  continuation's tokens, whether each was the argmax). The continuation's tokens are those of
  ``encode(context + continuation)`` after ``encode(context)``'s (so a BPE merge across the
  boundary is scored as the model would see it); an empty context is the document start (BOS if
  the dataset has one, else EOS). Inputs longer than ``max_length`` keep their last tokens.
- ``loglikelihood_rolling``: the whole string's log-likelihood from the document start, in
  windows of ``max_length`` predictions, each with as much preceding context as fits.
- ``generate_until``: not offered (one-line error): the reference GPT is scored, not sampled.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from ddecomp.errors import UserError
from ddecomp.evaluation.runmodel import data_roots, load_run


def _tokenizer(root: Path) -> Any:
    from tokenizers import Tokenizer

    path = Path(root) / "tokenizer.json"
    if not path.is_file():
        raise UserError(
            f"{root} has no tokenizer.json (prepared --from-tokens?): lm-eval needs text; "
            "evaluate a run trained on a dataset prepared from text"
        )
    return Tokenizer.from_file(str(path))


@register_model("ddecomp")
class DDecompLM(LM):
    """The reference GPT of ``run`` for lm-eval (see the module docstring)."""

    def __init__(
        self,
        run: str,
        device: str = "cpu",
        max_length: int | None = None,
        batch_size: int | str = 1,
        **_: Any,
    ) -> None:
        super().__init__()
        from ddecomp.data.dataset import open_dataset

        self.device_ = torch.device(device or "cpu")
        self.model, config, self.step = load_run(Path(run), self.device_)
        root = data_roots(config)[0]
        ds = open_dataset(root)
        self.tok = _tokenizer(Path(root))
        self.start = [ds.bos_id] if ds.bos_id is not None else [ds.eos_id]
        trained = int(config.get("max_len") or 0)
        self.max_length = int(max_length) if max_length else (trained or 2048)

    def _encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    @torch.no_grad()
    def _score(self, tokens: list[int], n: int) -> tuple[float, bool]:
        """Log-likelihood of the last ``n`` of ``tokens`` given those before (at most
        ``max_length`` inputs) and whether each was the model's argmax."""
        inputs = tokens[:-1][-self.max_length :]
        x = torch.tensor([inputs], dtype=torch.long, device=self.device_)
        logits = self.model(x)[0, -n:].float()
        logp = torch.log_softmax(logits, dim=-1)
        target = torch.tensor(tokens[-n:], device=self.device_)
        ll = float(logp.gather(-1, target[:, None]).sum())
        return ll, bool((logits.argmax(dim=-1) == target).all())

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        out = []
        for req in requests:
            context, continuation = req.args
            ctx = self.start + self._encode(context)
            whole = self.start + self._encode(context + continuation)
            cont = whole[len(ctx) :] if whole[: len(ctx)] == ctx else self._encode(continuation)
            if not cont:
                out.append((0.0, True))
                continue
            n = min(len(cont), self.max_length)
            out.append(self._score(ctx + cont, n))
        return out

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        out = []
        for req in requests:
            (text,) = req.args
            toks = self.start + self._encode(text)
            total, done = 0.0, 1  # the start token is given, not predicted
            while done < len(toks):
                upto = min(done + self.max_length, len(toks))
                ll, _ = self._score(toks[:upto], upto - done)
                total += ll
                done = upto
            out.append(total)
        return out

    def generate_until(self, requests: list[Any]) -> list[str]:
        raise UserError(
            "the ddecomp model scores text and does not generate: use tasks whose output_type "
            "is loglikelihood, loglikelihood_rolling or multiple_choice"
        )


def main(argv: list[str] | None = None) -> None:
    """lm-eval's command line with ``--model ddecomp`` (this module imported, so registered)."""
    from lm_eval.__main__ import cli_evaluate

    args = list(sys.argv[1:] if argv is None else argv)
    if "--model" not in args:
        run_cmd = args[:1] == ["run"]
        args = ["run", "--model", "ddecomp", *args[run_cmd:]]
    sys.argv = ["lm_eval", *args]
    cli_evaluate()


if __name__ == "__main__":
    main()
