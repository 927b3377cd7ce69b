"""Text sources, their splits and errors, and the token sequences cut from them."""

from __future__ import annotations

import bz2
import lzma
import time
import zlib

import pytest
import torch

from attnprune.llm import assets, data
from attnprune.llm.data import evaluation_sequences, load_texts, token_sequences

BOS = 128000
SHORT_DOCS = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.",
    "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition, "
    "seemed to unite some of the best blessings of existence.",
    "The family of Dashwood had long been settled in Sussex. Their estate was large, and their "
    "residence was at Norland Park, in the centre of their property.",
]


def test_austen_is_split_by_novel():
    splits = {split: load_texts("austen", split) for split in data.SPLITS}
    assert [len(splits[s]) for s in data.SPLITS] == [3, 1, 2]
    openings = {s: [novel.split("\n\n")[0].upper() for novel in novels] for s, novels in splits.items()}
    assert openings == {
        "calibration": ["SENSE AND SENSIBILITY", "PRIDE AND PREJUDICE", "MANSFIELD PARK"],
        "evaluation": ["EMMA"],
        "heldout": ["NORTHANGER ABBEY", "PERSUASION"],
    }
    everything = [novel for novels in splits.values() for novel in novels]
    assert len(set(everything)) == 6 and all(len(novel) > 400_000 for novel in everything)
    emma = splits["evaluation"][0]
    assert "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy" in emma
    assert load_texts("austen", "train") == splits["calibration"]  # aliases
    assert load_texts("austen", "validation") == splits["evaluation"]


def test_missing_austen_names_the_setup_command(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNPRUNE_CACHE", str(tmp_path))
    with pytest.raises(assets.MissingAssetError, match=r"python -m attnprune\.llm\.assets install"):
        load_texts("austen", "evaluation")


def test_lee_is_for_evaluation_only():
    background, heldout = load_texts("lee", "evaluation"), load_texts("lee", "heldout")
    assert (len(background), len(heldout)) == (300, 50)
    assert heldout[0].startswith("The national executive of the strife-torn Democrats")
    assert not set(background) & set(heldout)
    with pytest.raises(ValueError, match="evaluation only"):
        load_texts("lee", "calibration")
    with pytest.raises(ValueError, match="evaluation only"):
        load_texts("lee", "train")


def test_unknown_name_or_split_lists_the_accepted_ones():
    with pytest.raises(ValueError, match="'c4', 'wikitext2', 'austen', 'lee'"):
        load_texts("pile", "train")
    with pytest.raises(ValueError, match="'calibration', 'evaluation', 'heldout'"):
        load_texts("austen", "dev")
    with pytest.raises(ValueError, match="split"):
        load_texts("austen", None)


def test_local_text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("First paragraph.\n\nSecond one, with ünïcode.\n", encoding="utf-8")
    assert load_texts(str(path), "calibration") == [path.read_text(encoding="utf-8")]
    assert load_texts(path, "all") == load_texts(path, "evaluation")
    with pytest.raises(ValueError, match="split"):
        load_texts(str(path), "dev")
    with pytest.raises(FileNotFoundError, match="no such text file"):
        load_texts(str(tmp_path / "missing.txt"), "calibration")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        load_texts(str(tmp_path / "empty.txt"), "evaluation")


@pytest.mark.parametrize(("name", "split"), [("c4", "train"), ("c4", "validation"), ("wikitext2", "test")])
def test_hub_data_offline_fails_fast_naming_the_offline_profile(name, split):
    started = time.perf_counter()
    with pytest.raises(assets.HubUnavailableError) as raised:
        load_texts(name, split)
    assert time.perf_counter() - started < 20
    message = str(raised.value)
    assert "offline" in message and "--profile quick" in message and "'austen'" in message


def test_token_sequences_are_bos_then_a_window_of_the_text(llama3_tokenizer):
    sequences = token_sequences(llama3_tokenizer, SHORT_DOCS, 6, 16, seed=3)
    assert sequences.shape == (6, 16) and sequences.dtype == torch.long
    assert (sequences[:, 0] == BOS).all() and not (sequences[:, 1:] == BOS).any()
    stream = data._token_stream(llama3_tokenizer, SHORT_DOCS)
    windows = stream.unfold(0, 15, 1)  # every window of 15 consecutive text tokens
    for row in sequences[:, 1:]:
        assert (windows == row).all(dim=1).any()
    joined = llama3_tokenizer.decode(stream)
    assert joined == "\n\n".join(SHORT_DOCS)  # the concatenation, a blank line between documents


def test_token_sequences_are_deterministic_in_the_seed(llama3_tokenizer):
    first = token_sequences(llama3_tokenizer, SHORT_DOCS, 8, 12, seed=0)
    assert torch.equal(first, token_sequences(llama3_tokenizer, SHORT_DOCS, 8, 12, seed=0))
    assert not torch.equal(first, token_sequences(llama3_tokenizer, SHORT_DOCS, 8, 12, seed=1))


def test_no_bos_for_a_tokenizer_that_adds_none(llama3_tokenizer, monkeypatch):
    monkeypatch.setattr(data, "bos_token_id", lambda tokenizer: None)
    sequences = token_sequences(llama3_tokenizer, SHORT_DOCS, 4, 10)
    assert sequences.shape == (4, 10) and not (sequences == BOS).any()
    rows = evaluation_sequences(llama3_tokenizer, SHORT_DOCS, 10, None)
    assert torch.equal(rows.flatten(), data._token_stream(llama3_tokenizer, SHORT_DOCS)[: rows.numel()])


def test_large_corpora_draw_from_a_random_run_of_documents(llama3_tokenizer, monkeypatch):
    monkeypatch.setattr(data, "POOL_CHARS", 300)
    texts = [f"Document number {i} says something short about topic {i}." for i in range(40)]
    pool = data._pool(texts, torch.Generator().manual_seed(0))
    start = texts.index(pool[0])
    assert pool == [texts[(start + i) % 40] for i in range(len(pool))]
    assert sum(map(len, pool)) >= 300 > sum(map(len, pool[:-1]))
    first = token_sequences(llama3_tokenizer, texts, 3, 8, seed=5)
    assert torch.equal(first, token_sequences(llama3_tokenizer, texts, 3, 8, seed=5))


def test_evaluation_sequences_are_consecutive_windows(llama3_tokenizer):
    stream = data._token_stream(llama3_tokenizer, SHORT_DOCS)
    rows = evaluation_sequences(llama3_tokenizer, SHORT_DOCS, 11, None)
    assert rows.shape == (len(stream) // 10, 11) and (rows[:, 0] == BOS).all()
    assert torch.equal(rows[:, 1:].flatten(), stream[: rows.shape[0] * 10])
    assert torch.equal(evaluation_sequences(llama3_tokenizer, SHORT_DOCS, 11, 2), rows[:2])


def test_sequence_arguments_are_checked(llama3_tokenizer):
    with pytest.raises(ValueError, match="fewer than one window"):
        token_sequences(llama3_tokenizer, ["Too short."], 1, 64)
    with pytest.raises(ValueError, match="fewer than one window"):
        evaluation_sequences(llama3_tokenizer, ["Too short."], 64, None)
    with pytest.raises(ValueError, match="texts"):
        token_sequences(llama3_tokenizer, "a single string", 1, 4)
    with pytest.raises(ValueError, match="n_sequences"):
        token_sequences(llama3_tokenizer, SHORT_DOCS, 0, 4)
    with pytest.raises(ValueError, match="seq_len"):
        evaluation_sequences(llama3_tokenizer, SHORT_DOCS, 1, None)
    with pytest.raises(ValueError, match="max_sequences"):
        evaluation_sequences(llama3_tokenizer, SHORT_DOCS, 8, 0)


@pytest.mark.parametrize("compress", ["zlib", "bzip2", "xz", "none"])
def test_r_lazyload_records_in_every_compression(compress):
    payload = b"X\n\x00\x00\x00\x03 an R serialization"
    body = {
        "zlib": zlib.compress(payload),
        "bzip2": b"2" + bz2.compress(payload),
        "xz": b"Z" + lzma.compress(payload),
        "none": b"0" + payload,
    }[compress]
    assert data._decompress(body) == payload
