"""Speed and memory of a causal LM: prompt (prefill) and generation (decode) throughput, batch 1.

- **Prefill**: one forward pass over a prompt of T tokens (T = 512), no cache kept; only the last
  position's logits are computed (``logits_to_keep=1``), as generation needs. Its cost is the
  matrix products of T tokens with every weight: it falls with the FLOPs of the decoder layers.
- **Decode**: greedy generation of n new tokens (n = 128) with the KV cache, one token per forward
  pass, after a SHORT prompt (32 tokens, prefilled outside the timing). One token's vector times
  every weight matrix reads each weight once and does two FLOPs with it; with a short context the
  attention over the cache is small beside that, so a step costs about the time to read the
  weights, and a pruned model decodes at most ``parameters_dense / parameters_pruned`` times
  faster (:func:`decode_bound`). A long prompt would add a cache read that pruning heads shrinks
  differently, and blur that bound.

Each speed is the median of ``repeats`` timed runs after one warm-up run that is not counted, under
``torch.inference_mode``. The prompts are seeded random token ids of the model's vocabulary
(:func:`prompt_ids`): the cost of a forward pass does not depend on which tokens they are, and
greedy decoding does not stop at an end-of-text token.

Peak memory is that of a process (``ru_maxrss`` only grows), so each checkpoint is measured in a
fresh process: :func:`attnprune.structured.speed.measure_checkpoint` (dense or sliced) runs one,
which calls :func:`measure_model` and adds the bytes on disk and the peak resident set.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..core.checks import check_positive_int
from .batches import check_input_ids, context_length

DECODE_PROMPT_LEN = 32
"""The prompt of the decode measurement: short, so a step's cost is reading the weights."""


@dataclass(frozen=True)
class SpeedConfig:
    """What a speed measurement runs: a prefill of ``prompt_len`` tokens; a decode of ``new_tokens``
    after ``decode_prompt_len`` prompt tokens; each timed ``repeats`` times (median) after one
    warm-up; ``threads`` the torch CPU threads (None: torch's default); ``seed`` of the prompts."""

    prompt_len: int = 512
    new_tokens: int = 128
    repeats: int = 3
    threads: int | None = None
    decode_prompt_len: int = DECODE_PROMPT_LEN
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("prompt_len", "new_tokens", "repeats", "decode_prompt_len"):
            check_positive_int(name, getattr(self, name))
        if self.threads is not None:
            check_positive_int("threads", self.threads)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer ≥ 0, got {self.seed!r}")


@dataclass(frozen=True)
class SpeedReport:
    """The speed and memory of one model. ``parameters`` counts every parameter (embeddings and a
    tied ``lm_head`` once); ``bytes_on_disk`` is the size of the checkpoint's ``*.safetensors``
    files; ``peak_memory_bytes`` the peak resident set of the measuring process and
    ``baseline_memory_bytes`` its peak before the model was loaded (interpreter and libraries, the
    same for every model); those three are None when measured in-process. Speeds in tokens/s."""

    parameters: int
    bytes_on_disk: int | None
    peak_memory_bytes: int | None
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    threads: int
    prompt_len: int
    new_tokens: int
    repeats: int
    decode_prompt_len: int
    baseline_memory_bytes: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def prompt_ids(vocab_size: int, length: int, *, seed: int = 0) -> Tensor:
    """A (1, ``length``) prompt of token ids drawn uniformly from [0, ``vocab_size``), seeded."""
    check_positive_int("vocab_size", vocab_size)
    check_positive_int("length", length)
    return torch.randint(vocab_size, (1, length), generator=torch.Generator().manual_seed(seed))


def _median_rate(tokens: int, seconds: list[float]) -> float:
    return tokens / statistics.median(seconds)


def _check_prompt(name: str, ids: Tensor, model: nn.Module) -> Tensor:
    """One (1, T) sequence of token ids of the model's vocabulary within its context, on its device."""
    try:
        check_input_ids(ids, model)
    except ValueError as error:  # its messages name input_ids
        raise ValueError(name + str(error).removeprefix("input_ids")) from None
    if ids.shape[0] != 1:
        raise ValueError(f"{name} must be one sequence (batch 1), shape (1, T); got {tuple(ids.shape)}")
    return ids.to(next(model.parameters()).device)


@torch.inference_mode()
def prefill_speed(model: nn.Module, input_ids: Tensor, repeats: int) -> float:
    """Prompt throughput, tokens/s: T / (median seconds of one forward pass over the (1, T)
    ``input_ids``, no cache kept, last logits only), over ``repeats`` runs after one warm-up."""
    input_ids = _check_prompt("input_ids", input_ids, model)
    check_positive_int("repeats", repeats)
    model(input_ids, use_cache=False, logits_to_keep=1)  # warm-up, not counted
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(input_ids, use_cache=False, logits_to_keep=1)
        seconds.append(time.perf_counter() - start)
    return _median_rate(input_ids.shape[1], seconds)


@torch.inference_mode()
def greedy_decode(model: nn.Module, prompt_ids: Tensor, new_tokens: int) -> tuple[Tensor, float]:
    """Greedy generation with the KV cache: the (1, T) ``prompt_ids`` prefilled once (not timed),
    then ``new_tokens`` single-token forward passes, each feeding the argmax of the last one.
    Returns the (1, new_tokens) tokens those passes produced and the seconds they took."""
    prompt_ids = _check_prompt("prompt_ids", prompt_ids, model)
    check_positive_int("new_tokens", new_tokens)
    out = model(prompt_ids, use_cache=True, logits_to_keep=1)
    cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)  # (1, 1)
    tokens = []
    start = time.perf_counter()
    for _ in range(new_tokens):
        out = model(token, past_key_values=cache, use_cache=True)
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        tokens.append(token)
    seconds = time.perf_counter() - start
    return torch.cat(tokens, dim=1), seconds


def decode_speed(model: nn.Module, prompt_ids: Tensor, new_tokens: int, repeats: int) -> float:
    """Generation throughput, tokens/s: ``new_tokens`` / (median seconds of :func:`greedy_decode`'s
    timed loop), over ``repeats`` runs after one warm-up; each run prefills ``prompt_ids`` anew."""
    check_positive_int("repeats", repeats)
    greedy_decode(model, prompt_ids, new_tokens)  # warm-up, not counted
    seconds = [greedy_decode(model, prompt_ids, new_tokens)[1] for _ in range(repeats)]
    return _median_rate(new_tokens, seconds)


def decode_bound(params_dense: int, params_pruned: int) -> float:
    """The bound on the decode speedup of a pruned model: ``params_dense / params_pruned``, the
    ratio of all parameters (a decoded token reads every weight once; an untied embedding table is
    read one row at a time, so for such a model the bound is a little loose)."""
    check_positive_int("params_dense", params_dense)
    check_positive_int("params_pruned", params_pruned)
    return params_dense / params_pruned


def parameter_count(model: nn.Module) -> int:
    """Every parameter of ``model``, a tied one once."""
    return sum(p.numel() for p in model.parameters())


def bytes_on_disk(folder: str | Path) -> int:
    """The summed size of the ``*.safetensors`` files of a checkpoint folder (its weights)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise ValueError(f"folder {str(folder)!r} holds no *.safetensors file; write it with save_pretrained")
    return sum(path.stat().st_size for path in files)


def peak_rss_bytes() -> int:
    """The peak resident set of this process so far, in bytes. On Linux ``VmHWM`` of
    ``/proc/self/status``, which a new program starts afresh: ``ru_maxrss`` would not do there, since
    Linux carries it over from the parent through fork and exec (a measuring child would report the
    peak of the notebook kernel that started it). Elsewhere ``ru_maxrss`` (bytes on macOS, kB else)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def check_context(model: nn.Module, config: SpeedConfig) -> None:
    """The prompts and the generated tokens must fit the model's context length."""
    context = context_length(model)
    if context is None:
        return
    if config.prompt_len > context:
        raise ValueError(f"prompt_len {config.prompt_len} exceeds the model's context length {context}")
    if config.decode_prompt_len + config.new_tokens > context:
        raise ValueError(
            f"new_tokens {config.new_tokens} after a {config.decode_prompt_len}-token prompt exceed the "
            f"model's context length {context}"
        )


def measure_model(model: nn.Module, config: SpeedConfig) -> SpeedReport:
    """Prefill and decode speed of ``model`` in this process under ``config`` (its ``threads`` are
    recorded as torch has them: the caller sets them); bytes and memory left None."""
    if not isinstance(config, SpeedConfig):
        raise ValueError(f"config must be a SpeedConfig, got {type(config).__name__}")
    check_context(model, config)
    vocab = model.get_input_embeddings().num_embeddings
    prompt = prompt_ids(vocab, config.prompt_len, seed=config.seed)
    short = prompt_ids(vocab, config.decode_prompt_len, seed=config.seed + 1)
    return SpeedReport(
        parameters=parameter_count(model),
        bytes_on_disk=None,
        peak_memory_bytes=None,
        prefill_tokens_per_s=prefill_speed(model, prompt, config.repeats),
        decode_tokens_per_s=decode_speed(model, short, config.new_tokens, config.repeats),
        threads=torch.get_num_threads(),
        prompt_len=config.prompt_len,
        new_tokens=config.new_tokens,
        repeats=config.repeats,
        decode_prompt_len=config.decode_prompt_len,
        baseline_memory_bytes=None,
    )
