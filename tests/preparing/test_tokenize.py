"""Tests for ddecomp.preparing.tokenize: loading, deterministic training, EOS/BOS, dtype, token
identity."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers

import ddecomp.preparing.tokenize as tkz
from ddecomp.errors import UserError
from ddecomp.preparing.ingest import iter_documents
from ddecomp.preparing.inputs import default_corpus_files
from ddecomp.preparing.tokenize import (
    TokenizerInfo,
    encode_documents,
    id_bound,
    load_tokenizer,
    resolve_special,
    save_tokenizer,
    token_dtype,
    train_bpe,
)
from tests._fixtures import run_python


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """~1.3 MB of real text: the first 120 documents of the default corpus."""
    texts = list(iter_documents(default_corpus_files()[:120]))
    assert len(texts) > 100
    return texts


@pytest.fixture(scope="module")
def bpe(corpus: list[str]) -> Tokenizer:
    return train_bpe(corpus, vocab_size=1024)


def word_level(words: list[str], specials: dict[str, int] | None = None) -> Tokenizer:
    """A whitespace WordLevel tokenizer: token ``words[i]`` has id i (plus ``specials``)."""
    vocab = {w: i for i, w in enumerate(words)} | (specials or {})
    tok = Tokenizer(models.WordLevel(vocab, unk_token=words[0]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


# ----------------------------------------------------------------------------------- training


def test_train_bpe_is_deterministic_in_process(corpus: list[str], bpe: Tokenizer) -> None:
    again = train_bpe(iter(corpus), vocab_size=1024)
    assert again.to_str() == bpe.to_str()
    assert bpe.get_vocab_size() == 1024
    assert bpe.token_to_id("<|endoftext|>") == 0
    text = corpus[3]
    assert bpe.decode(bpe.encode(text).ids) == text  # byte-level: lossless


def test_train_bpe_is_deterministic_across_processes(tmp_path: Path, bpe: Tokenizer) -> None:
    # Another interpreter has another hash seed (Python and Rust HashMaps): same bytes anyway.
    code = (
        "import hashlib, sys\n"
        "from ddecomp.preparing.ingest import iter_documents\n"
        "from ddecomp.preparing.inputs import default_corpus_files\n"
        "from ddecomp.preparing.tokenize import train_bpe\n"
        "tok = train_bpe(iter_documents(default_corpus_files()[:120]), vocab_size=1024)\n"
        "print(hashlib.sha256(tok.to_str().encode()).hexdigest())\n"
    )
    out = run_python("-c", code, env={"PYTHONHASHSEED": "12345"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == hashlib.sha256(bpe.to_str().encode()).hexdigest()


def test_train_bpe_samples_the_first_documents_up_to_max_bytes(corpus: list[str]) -> None:
    head = corpus[:10]
    cap = sum(len(t.encode()) for t in head)  # the 10th document reaches the cap exactly
    capped = train_bpe(corpus, vocab_size=600, max_bytes=cap)
    assert capped.to_str() == train_bpe(head, vocab_size=600).to_str()
    assert capped.to_str() != train_bpe(corpus, vocab_size=600).to_str()


def test_train_bpe_errors() -> None:
    with pytest.raises(UserError, match="--vocab-size 100 is too small"):
        train_bpe(["text"], vocab_size=100)
    with pytest.raises(UserError, match="empty corpus"):
        train_bpe([], vocab_size=300)


# ------------------------------------------------------------------------------ load and save


def test_save_and_load_round_trip(tmp_path: Path, bpe: Tokenizer, corpus: list[str]) -> None:
    path = tmp_path / "tokenizer.json"
    sha = save_tokenizer(bpe, path)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]  # no temp file left
    for spec in (str(path), str(tmp_path)):
        tok, source, sha_loaded = load_tokenizer(spec)
        assert source == str(path.resolve())
        assert sha_loaded == sha
        assert tok.encode(corpus[0]).ids == bpe.encode(corpus[0]).ids
    assert save_tokenizer(bpe, path) == sha  # overwrite in place, same bytes


def test_load_disables_truncation_and_padding(tmp_path: Path) -> None:
    tok = word_level(["<unk>", "a", "b"], {"</s>": 3})
    tok.enable_truncation(max_length=2)
    tok.enable_padding(length=8)
    save_tokenizer(tok, tmp_path / "t.json")
    loaded, _, _ = load_tokenizer(str(tmp_path / "t.json"))
    assert loaded.truncation is None
    assert loaded.padding is None
    tokens, lengths = encode_documents(loaded, ["a b a b a"], eos_id=3)
    assert tokens.tolist() == [1, 2, 1, 2, 1, 3]
    assert lengths.tolist() == [6]
    with pytest.raises(UserError, match="truncates or pads"):
        encode_documents(tok, ["a"], eos_id=3)


def test_load_errors(tmp_path: Path) -> None:
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(UserError, match=r"directory has no tokenizer\.json"):
        load_tokenizer(str(tmp_path / "empty_dir"))
    (tmp_path / "bad.json").write_text(json.dumps({"not": "a tokenizer"}))
    with pytest.raises(UserError, match=r"bad\.json is not a valid tokenizer\.json"):
        load_tokenizer(str(tmp_path / "bad.json"))


def test_hub_name_goes_to_the_hub_and_fails_clearly_offline() -> None:
    # The real Tokenizer.from_pretrained is called; offline mode (no network here) makes the hub
    # client answer at once instead of retrying for ~25 s. Its own words end up in our message.
    code = (
        "from ddecomp.preparing.tokenize import load_tokenizer\n"
        "from ddecomp.errors import UserError\n"
        "try:\n"
        "    load_tokenizer('ddecomp-tests/no-such-tokenizer')\n"
        "except UserError as e:\n"
        "    print(e)\n"
    )
    out = run_python("-c", code, env={"HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    msg = out.stdout.strip()
    assert msg.startswith(
        "cannot load tokenizer 'ddecomp-tests/no-such-tokenizer': not a file, not a directory "
        "with tokenizer.json, and the hub said: "
    )
    assert "Hub" in msg.split("the hub said: ")[1]  # huggingface_hub's own message
    assert msg.endswith("; pass a local tokenizer.json")
    assert "\n" not in msg


# --------------------------------------------------------------------------- special tokens


@pytest.mark.parametrize("eos", ["<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"])
def test_eos_candidates(eos: str) -> None:
    tok = word_level(["<unk>", "x"], {eos: 7})
    assert resolve_special(tok, None, bos=False) == (7, eos, None, None)


def test_eos_candidate_order_and_explicit_choice() -> None:
    tok = word_level(["<unk>", "x"], {"</s>": 5, "<|endoftext|>": 6, "<sep>": 9})
    assert resolve_special(tok, None, bos=False)[:2] == (6, "<|endoftext|>")
    assert resolve_special(tok, "<sep>", bos=False)[:2] == (9, "<sep>")
    with pytest.raises(UserError, match="--eos-token '<nope>' is not in the tokenizer's vocab"):
        resolve_special(tok, "<nope>", bos=False)


def test_no_eos_tells_the_user_to_pass_eos_token() -> None:
    with pytest.raises(UserError, match="pass --eos-token"):
        resolve_special(word_level(["<unk>", "x"]), None, bos=False)


@pytest.mark.parametrize("bos", ["<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"])
def test_bos_candidates(bos: str) -> None:
    tok = word_level(["<unk>", "x"], {"</s>": 2, bos: 3})
    assert resolve_special(tok, None, bos=True) == (2, "</s>", 3, bos)


def test_bos_falls_back_to_eos() -> None:
    tok = word_level(["<unk>"], {"<|endoftext|>": 1})
    assert resolve_special(tok, None, bos=True) == (1, "<|endoftext|>", 1, "<|endoftext|>")


def test_tokenizer_info() -> None:
    info = TokenizerInfo("t.json", "ab" * 32, 100, 0, "<|endoftext|>")
    assert info.as_dict() == {
        "source": "t.json",
        "sha256": "ab" * 32,
        "vocab_size": 100,
        "eos_id": 0,
        "eos_token": "<|endoftext|>",
        "bos_id": None,
        "bos_token": None,
    }
    with pytest.raises(ValueError, match="eos_id 100 is outside"):
        TokenizerInfo("t.json", "", 100, 100, "x")
    with pytest.raises(ValueError, match="disagree"):
        TokenizerInfo("t.json", "", 100, 1, "x", bos_id=2)


# ----------------------------------------------------------------------------------- encoding


def test_token_dtype_boundaries() -> None:
    assert token_dtype(1) == np.uint16
    assert token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32
    assert token_dtype(2**32) == np.uint32
    with pytest.raises(UserError):
        token_dtype(0)


@pytest.mark.parametrize("bos", [False, True])
def test_encode_documents_token_identity(bpe: Tokenizer, corpus: list[str], bos: bool) -> None:
    texts = corpus[:40]
    bos_id = 0 if bos else None
    tokens, lengths = encode_documents(bpe, texts, eos_id=0, bos_id=bos_id)
    assert tokens.dtype == np.uint16
    assert lengths.dtype == np.int64
    expected = [
        ([0] if bos else []) + bpe.encode(t, add_special_tokens=False).ids + [0] for t in texts
    ]
    assert lengths.tolist() == [len(e) for e in expected]
    assert tokens.tolist() == [i for e in expected for i in e]
    assert int((tokens == 0).sum()) == len(texts) * (2 if bos else 1)  # EOS only where we put it


def test_encode_documents_across_chunks(
    bpe: Tokenizer, corpus: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = corpus[:30]
    whole = encode_documents(bpe, texts, eos_id=0)
    monkeypatch.setattr(tkz, "_ENCODE_CHUNK_CHARS", 5000)  # many small encode_batch calls
    chunked = encode_documents(bpe, texts, eos_id=0)
    np.testing.assert_array_equal(whole[0], chunked[0])
    np.testing.assert_array_equal(whole[1], chunked[1])


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(0, 50), max_size=30), cap=st.integers(1, 120))
def test_chunks_cover_all_texts_in_order(sizes: list[int], cap: int) -> None:
    texts = ["x" * n for n in sizes]
    batches = list(tkz._chunks(((t, True, True) for t in texts), cap))
    chunks = [[seg[0] for seg in b] for b in batches]
    assert [t for c in chunks for t in c] == texts
    assert all(len(c) > 0 for c in chunks)
    for c in chunks[:-1]:  # every chunk but the last reaches the cap, and only at its end
        assert sum(map(len, c)) >= cap > sum(map(len, c[:-1]))


def test_special_token_text_inside_a_document_is_plain_text(bpe: Tokenizer) -> None:
    text = "before <|endoftext|> after"
    assert 0 in bpe.encode(text, add_special_tokens=False).ids  # what HF does by default
    tokens, lengths = encode_documents(bpe, [text], eos_id=0)
    assert lengths.tolist() == [tokens.size]
    assert tokens[-1] == 0
    assert 0 not in tokens[:-1].tolist()
    assert bpe.decode(tokens[:-1].tolist()) == text
    assert bpe.encode_special_tokens is False  # the tokenizer is left as it was


def test_encode_documents_empty_input(bpe: Tokenizer) -> None:
    tokens, lengths = encode_documents(bpe, [], eos_id=0)
    assert tokens.shape == (0,)
    assert lengths.shape == (0,)


def test_ids_beyond_uint16_are_kept_in_uint32() -> None:
    words = [f"w{i}" for i in range(70_000)]
    tok = word_level(words, {"<|endoftext|>": 70_000})
    assert id_bound(tok) == 70_001
    eos_id, _, _, _ = resolve_special(tok, None, bos=False)
    texts = ["w69999 w1 w65536", "w65535 w0"]
    tokens, lengths = encode_documents(tok, texts, eos_id=eos_id)
    assert tokens.dtype == np.uint32
    assert tokens.tolist() == [69_999, 1, 65_536, 70_000, 65_535, 0, 70_000]
    assert lengths.tolist() == [4, 3]
    with pytest.raises(UserError, match="token id 69999 does not fit in uint16"):
        encode_documents(tok, texts[:1], eos_id=5, dtype=np.uint16)
    with pytest.raises(UserError, match="eos_id 70000 does not fit in uint16"):
        encode_documents(tok, texts, eos_id=eos_id, dtype=np.uint16)


@pytest.mark.slow
def test_a_single_ten_million_token_document() -> None:
    # WordLevel keeps it fast (~8 s); the cost that matters is HF's per-token memory (~3 GB peak).
    tok = word_level(["<unk>", "a", "b"], {"<|endoftext|>": 3})
    tokens, lengths = encode_documents(tok, ["a b " * 5_000_000], eos_id=3)
    assert lengths.tolist() == [10_000_001]
    assert tokens.dtype == np.uint16
    assert tokens.size == 10_000_001
    assert tokens[-1] == 3
    np.testing.assert_array_equal(np.bincount(tokens), [0, 5_000_000, 5_000_000, 1])
    np.testing.assert_array_equal(tokens[:6], [1, 2, 1, 2, 1, 2])


def test_seams_keep_the_whole_text_tokens_and_are_refused_where_they_would_not(
    bpe: Tokenizer, corpus: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenizers import normalizers

    from ddecomp.preparing.seams import cut_points

    text = "".join(corpus[:40])  # Python sources: indentation, blank lines, trailing spaces

    def enc(tok: Tokenizer, t: str) -> list[int]:
        return list(tok.encode(t, add_special_tokens=False).ids)

    cuts = cut_points(lambda t: enc(bpe, t), text, 3000)
    assert len(cuts) > len(text) // 3000  # vacuity guard: the text was cut throughout
    assert all(0 < b - a <= 3000 for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True))
    whole = enc(bpe, text)
    pieces = [enc(bpe, text[a:b]) for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert [i for p in pieces for i in p] == whole  # the whole text, not only the windows
    # A tokenizer that strips each input's edges: every candidate changes the tokens, so no
    # seam is taken and the document is encoded whole, still exactly.
    strip = Tokenizer.from_str(bpe.to_str())
    strip.normalizer = normalizers.Strip()
    assert cut_points(lambda t: enc(strip, t), text[:20000], 3000) == []
    monkeypatch.setattr(tkz, "LONG_DOC_CHARS", 3000)
    tokens, _ = encode_documents(strip, [text[:20000]], eos_id=0)
    assert tokens.tolist() == [*enc(strip, text[:20000]), 0]


def test_bpe_training_on_a_long_document_in_pieces_gives_the_same_tokenizer(
    corpus: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ddecomp.preparing.seams import cut_points

    text = "".join(corpus[:60])
    whole = train_bpe([text, "a short one"], vocab_size=600).to_str()
    monkeypatch.setattr(tkz, "LONG_DOC_CHARS", 5000)
    assert len(cut_points(None, text, 5000)) > 20  # vacuity guard: it is cut
    assert train_bpe([text, "a short one"], vocab_size=600).to_str() == whole
