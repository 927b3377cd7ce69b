"""Text for calibration and evaluation, and the token sequences cut from it.

:func:`load_texts` takes a data set and a split. The split names are ``calibration``,
``evaluation`` and ``heldout`` (each data set also accepts its own names as aliases), and every
source returns the same shape, a list of documents (``list[str]``):

- ``c4``: ``allenai/c4`` (en) from the Hugging Face hub, the shards Wanda and SparseGPT use:
  ``calibration`` (``train``) = train shard 00000-of-01024, ``evaluation`` (``validation``) =
  validation shard 00000-of-00008, ``heldout`` = validation shard 00001-of-00008.
- ``wikitext2``: ``Salesforce/wikitext``, config ``wikitext-2-raw-v1``, from the hub, one document
  per row: ``calibration`` (``train``), ``evaluation`` (``test``, the split perplexity is
  reported on), ``heldout`` (``validation``).
- ``austen``: Jane Austen's six novels (Debian package ``r-cran-janeaustenr``, offline), one
  document per novel, **split by novel** so calibration and evaluation never share text:
  ``calibration`` (``train``) = Sense and Sensibility, Pride and Prejudice, Mansfield Park (the
  first three published, 1811-1814); ``evaluation`` (``validation``) = Emma (1815); ``heldout``
  (``test``) = Northanger Abbey, Persuasion (1817).
- ``lee``: the Lee news corpus (files in the ``gensim`` wheel, offline, latin-1, one article per
  line), for evaluation only since its copyright is unclear: ``evaluation`` (``validation``) =
  ``lee_background.cor`` (300 articles), ``heldout`` (``test``) = ``lee.cor`` (50 articles).
- the path of a local UTF-8 text file: read whole as one document; any of the split names or
  aliases, or ``all``, is accepted (the file is the split: pass different files for calibration
  and evaluation).

Token sequences follow the Wanda/SparseGPT recipe: the documents are tokenised and concatenated
(separated by a blank line), then :func:`token_sequences` draws random windows (calibration, and
held-out samples) and :func:`evaluation_sequences` cuts consecutive non-overlapping windows (the
standard perplexity protocol). **[choice]** One recipe for every source: Wanda's C4 loader
instead takes each window inside one random document longer than T, which short articles (Lee)
cannot satisfy; here a window may cross a document boundary. **[choice]** When the tokenizer adds a
BOS token to a document (Llama 3 does, SmolLM2 does not), every window starts with BOS followed by
T − 1 text tokens, so each sequence looks to the model like the start of a document, as in use.
"""

from __future__ import annotations

import bz2
import lzma
import os
import struct
import warnings
import zlib
from functools import lru_cache
from pathlib import Path

import torch

from ..core.checks import check_positive_int
from . import assets

DATASETS = ("c4", "wikitext2", "austen", "lee")
SPLITS = ("calibration", "evaluation", "heldout")
SEPARATOR = "\n\n"
POOL_CHARS = 12_000_000
"""Random windows are drawn from at most this many characters of text (about 3M tokens): all of
it for Austen and WikiText-2, a random run of consecutive documents of a C4 shard."""

C4_FILES = {
    "calibration": ("train", "en/c4-train.00000-of-01024.json.gz"),
    "evaluation": ("validation", "en/c4-validation.00000-of-00008.json.gz"),
    "heldout": ("validation", "en/c4-validation.00001-of-00008.json.gz"),
}
WIKITEXT_SPLITS = {"calibration": "train", "evaluation": "test", "heldout": "validation"}
AUSTEN_TITLES = {
    "sensesensibility": "Sense and Sensibility",
    "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}
AUSTEN_SPLITS = {
    "calibration": ("sensesensibility", "prideprejudice", "mansfieldpark"),
    "evaluation": ("emma",),
    "heldout": ("northangerabbey", "persuasion"),
}
LEE_FILES = {"evaluation": "lee_background.cor", "heldout": "lee.cor"}
ALIASES = {
    "c4": {"train": "calibration", "validation": "evaluation"},
    "wikitext2": {"train": "calibration", "test": "evaluation", "validation": "heldout"},
    "austen": {"train": "calibration", "validation": "evaluation", "test": "heldout"},
    "lee": {"validation": "evaluation", "test": "heldout"},
}


def split_names(name: str) -> tuple[str, ...]:
    """The split names (and aliases) accepted for the data set ``name``."""
    roles = tuple(LEE_FILES) if name == "lee" else SPLITS
    return roles + tuple(ALIASES.get(name, {}))


def load_texts(name: str, split: str) -> list[str]:
    """The documents of a data set's split, as a list of strings (see the module's table).

    ``name`` is one of :data:`DATASETS` or the path of a local text file.
    """
    if not isinstance(name, (str, os.PathLike)):
        raise ValueError(f"name must be one of {DATASETS} or a text file path, got {name!r}")
    if not isinstance(split, str):
        raise ValueError(f"split must be a string such as 'calibration', got {split!r}")
    name = os.fspath(name)
    if name in DATASETS:
        role = _role(name, split)
        loader = {"c4": _c4, "wikitext2": _wikitext2, "austen": _austen, "lee": _lee}[name]
        return list(loader(role))
    path = Path(name).expanduser()
    if path.suffix == ".txt" or path.exists() or os.sep in name:
        if split not in (*SPLITS, "train", "validation", "test", "all"):
            raise ValueError(
                f"split must be one of {(*SPLITS, 'train', 'validation', 'test', 'all')} "
                f"for a text file (the file is the whole split), got {split!r}"
            )
        return [_read_text_file(path)]
    raise ValueError(f"name must be one of {DATASETS} or the path of a local .txt file, got {name!r}")


def _role(name: str, split: str) -> str:
    role = ALIASES[name].get(split, split)
    if name == "lee" and role in ("calibration", "train"):
        raise ValueError(
            "split: the Lee news corpus is for evaluation only (its copyright is unclear); "
            f"calibrate on 'austen' instead, or use one of {split_names('lee')}"
        )
    if role not in split_names(name):
        raise ValueError(f"split of {name!r} must be one of {split_names(name)}, got {split!r}")
    return role


def _read_text_file(path: Path) -> str:
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder, not a text file; pass a .txt file")
    if not path.is_file():
        raise FileNotFoundError(f"no such text file {str(path)!r}; pass an existing .txt path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        byte = error.object[error.start : error.start + 1]
        raise ValueError(
            f"the file {str(path)!r} is not UTF-8 text (byte {error.start} is {byte!r}); "
            "pass a plain .txt file saved as UTF-8"
        ) from None
    if not text.strip():
        raise ValueError(f"the text file {str(path)!r} is empty (or only white space); pass a file with text")
    return text


def _hub_texts(repo: str, split: str, **options) -> list[str]:
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # a chapter's output must repeat exactly under nbval
    try:
        rows = datasets.load_dataset(repo, split=split, **options)
    except OSError as error:  # ConnectionError offline; DatasetNotFoundError is a FileNotFoundError
        raise assets.HubUnavailableError(
            f"cannot load the data set {repo!r} from the Hugging Face hub "
            f"({assets.offline_reason(error)}). {assets.OFFLINE_HINT}"
        ) from error
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()
    return list(rows["text"])


@lru_cache(maxsize=4)
def _c4(role: str) -> tuple[str, ...]:
    split, file = C4_FILES[role]
    return tuple(_hub_texts("allenai/c4", split, data_files={split: file}))


@lru_cache(maxsize=4)
def _wikitext2(role: str) -> tuple[str, ...]:
    return tuple(_hub_texts("Salesforce/wikitext", WIKITEXT_SPLITS[role], name="wikitext-2-raw-v1"))


@lru_cache(maxsize=4)
def _lee(role: str) -> tuple[str, ...]:
    text = (assets.lee_corpus_dir() / LEE_FILES[role]).read_text(encoding="latin-1")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _austen(role: str) -> tuple[str, ...]:
    return tuple(austen_novel(key) for key in AUSTEN_SPLITS[role])


def austen_novel(key: str) -> str:
    """One novel of ``janeaustenr`` as plain text: its wrapped lines joined into paragraphs,
    paragraphs separated by a blank line. ``key`` is one of :data:`AUSTEN_TITLES`."""
    if key not in AUSTEN_TITLES:
        raise ValueError(f"key must be one of {tuple(AUSTEN_TITLES)}, got {key!r}")
    return _novel(assets.austen_dir(), key)


@lru_cache(maxsize=8)
def _novel(folder: Path, key: str) -> str:
    lines = _read_r_lazyload(folder, key)
    paragraphs, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    return SEPARATOR.join(paragraphs)


def _read_r_lazyload(folder: Path, variable: str) -> list[str]:
    """A character vector from R's lazy-load database ``Rdata.rdx`` (index) / ``Rdata.rdb``.

    Each .rdb record is a 4-byte big-endian length then a serialization, compressed with zlib,
    or (after a type byte) bzip2, xz or nothing; the ``rdata`` package parses the serialization.
    """
    import rdata

    index = rdata.read_rds(folder / "Rdata.rdx")
    offset, length = (int(v) for v in index["variables"][variable])
    with open(folder / "Rdata.rdb", "rb") as handle:
        handle.seek(offset)
        record = handle.read(length)
    size = struct.unpack(">I", record[:4])[0]
    payload = _decompress(record[4:])
    if len(payload) != size:
        raise ValueError(f"{folder}/Rdata.rdb: record {variable!r} is corrupt; reinstall: {assets.SETUP_HINT}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Unknown file type: assumed RDS"
        parsed = rdata.parser.parse_data(payload)
    return [str(line) for line in rdata.conversion.convert(parsed)]


def _decompress(body: bytes) -> bytes:
    if body[:1] == b"\x78":  # zlib, R's default
        return zlib.decompress(body)
    kind, data = body[:1], body[1:]
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    if kind == b"0":
        return data
    raise ValueError(f"unknown compression in an R lazy-load record (type byte {kind!r})")


def bos_token_id(tokenizer) -> int | None:
    """The BOS token id if the tokenizer prepends it to a document by default, else None."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("a")["input_ids"]
    return bos if bos is not None and ids[:1] == [bos] else None


def _check_texts(texts: list[str]) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
        raise ValueError("texts must be a non-empty list of strings (documents); use load_texts")
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must hold only strings")
    return list(texts)


def _check_seq_len(seq_len: int) -> int:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"seq_len must be an integer ≥ 2 (tokens per sequence), got {seq_len!r}")
    return seq_len


def _token_stream(tokenizer, texts: list[str], enough: int | None = None) -> torch.Tensor:
    """The documents tokenised without special tokens and concatenated (blank line between),
    stopping once ``enough`` tokens are there (all of them if None)."""
    chunks, total = [], 0
    for start in range(0, len(texts), 256):
        batch = texts[start : start + 256]
        joined = [t + SEPARATOR if start + i < len(texts) - 1 else t for i, t in enumerate(batch)]
        for ids in tokenizer(joined, add_special_tokens=False, verbose=False)["input_ids"]:
            chunks.append(torch.tensor(ids, dtype=torch.long))
            total += len(ids)
        if enough is not None and total >= enough:
            break
    return torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.long)


def _pool(texts: list[str], generator: torch.Generator) -> list[str]:
    """All documents in order if they fit :data:`POOL_CHARS`, else a run of consecutive
    documents (wrapping around) from a random first one, up to that many characters."""
    lengths = [len(t) for t in texts]
    if sum(lengths) <= POOL_CHARS:
        return texts
    first = int(torch.randint(len(texts), (1,), generator=generator))
    pool, chars = [], 0
    for i in range(len(texts)):
        text = texts[(first + i) % len(texts)]
        pool.append(text)
        chars += len(text)
        if chars >= POOL_CHARS:
            break
    return pool


def _with_bos(windows: torch.Tensor, bos: int | None) -> torch.Tensor:
    if bos is None:
        return windows
    return torch.cat([torch.full((windows.shape[0], 1), bos, dtype=torch.long), windows], dim=1)


def token_sequences(tokenizer, texts: list[str], n_sequences: int, seq_len: int, *, seed: int = 0) -> torch.LongTensor:
    """N random windows of T tokens of the concatenated text: (n_sequences, seq_len).

    The Wanda/SparseGPT calibration recipe (random windows of the tokenised text; windows may
    overlap and may cross a document boundary), deterministic in ``seed``. With a tokenizer that
    adds BOS, each window is BOS then T − 1 consecutive text tokens.
    """
    texts = _check_texts(texts)
    check_positive_int("n_sequences", n_sequences)
    _check_seq_len(seq_len)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    generator = torch.Generator().manual_seed(seed)
    bos = bos_token_id(tokenizer)
    body = seq_len - (bos is not None)
    stream = _token_stream(tokenizer, _pool(texts, generator))
    if len(stream) < body:
        raise ValueError(
            f"texts hold {len(stream)} tokens, fewer than one window of seq_len={seq_len}; "
            "pass more text or a shorter seq_len"
        )
    starts = torch.randint(len(stream) - body + 1, (n_sequences,), generator=generator)
    windows = stream[starts[:, None] + torch.arange(body)]
    return _with_bos(windows, bos)


def evaluation_sequences(
    tokenizer, texts: list[str], seq_len: int, max_sequences: int | None = None
) -> torch.LongTensor:
    """Consecutive non-overlapping windows of T tokens of the concatenated text, in order:
    (N, seq_len) with N = min(max_sequences, as many as the text holds); the remainder is dropped.

    The standard perplexity protocol (as in Wanda and SparseGPT). With a tokenizer that adds BOS,
    each window is BOS then the next T − 1 text tokens.
    """
    texts = _check_texts(texts)
    _check_seq_len(seq_len)
    if max_sequences is not None:
        check_positive_int("max_sequences", max_sequences)
    bos = bos_token_id(tokenizer)
    body = seq_len - (bos is not None)
    stream = _token_stream(tokenizer, texts, None if max_sequences is None else max_sequences * body)
    count = len(stream) // body if max_sequences is None else min(max_sequences, len(stream) // body)
    if count == 0:
        raise ValueError(
            f"texts hold {len(stream)} tokens, fewer than one window of seq_len={seq_len}; "
            "pass more text or a shorter seq_len"
        )
    return _with_bos(stream[: count * body].view(count, body), bos)
