"""Model checkpoints: where the weights come from, how they are pinned, how they are loaded.

A checkpoint is named by a URI:

- a local directory (or weights file), relative to the current directory;
- ``s3://bucket/prefix``: a directory of objects, copied once per node into the model cache
  (``$XMODAL_MODEL_CACHE``, default ``~/.cache/xmodal/models``) under a file lock, into a
  temporary directory that is renamed into place, so no reader ever sees half a copy;
- ``hf:org/name`` or ``hf:org/name@revision``: a snapshot already in the Hugging Face cache
  (``$HF_HUB_CACHE`` or ``$HF_HOME/hub``), found through the cache's own layout.

Nothing is fetched from a hub: Hugging Face loading runs with ``HF_HUB_OFFLINE=1`` and
``local_files_only=True``. ``sha256`` pins the weights file (what ``sha256sum`` prints for
``open_clip_model.safetensors`` or ``model.safetensors``); a missing checkpoint or a mismatch
raises :class:`CheckpointError` when a stage's parameters are validated, that is when the config
is loaded, before any data is read. Weights load from safetensors; other formats go through
``torch.load(weights_only=True)`` only.

open_clip checkpoints are directories with ``open_clip_config.json`` and weights, loaded with
``local-dir:``. A config may name its own BPE merges (``"xmodal_tokenizer": {"bpe": FILE}``):
the demo model's small vocabulary keeps its checkpoint a few MB. CLAP checkpoints are
``save_pretrained`` directories of ``ClapModel`` and ``ClapProcessor``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SHA256_PATTERN = r"^[0-9a-f]{64}$"
WEIGHT_NAMES = (
    "open_clip_model.safetensors", "model.safetensors", "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin", "pytorch_model.bin", "model.pth",
)
_HF_RE = re.compile(r"^hf:(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)(?:@(?P<rev>[A-Za-z0-9_.-]+))?$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, incomplete, or not the pinned one."""


def model_cache_dir() -> Path:
    return Path(os.environ.get("XMODAL_MODEL_CACHE") or Path.home() / ".cache" / "xmodal" / "models")


def weights_file(path: Path) -> Path:
    """The weights file of a checkpoint directory (or ``path`` itself when it is a file)."""
    if path.is_file():
        return path
    for name in WEIGHT_NAMES:
        if (path / name).is_file():
            return path / name
    found = sorted(path.glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    raise CheckpointError(f"checkpoint {path}: no weights file (looked for {', '.join(WEIGHT_NAMES)})")


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) so that actors hash once."""
    st = path.stat()
    return _sha256_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


def verify_sha256(path: Path, expected: str | None, uri: str) -> None:
    if expected is None:
        return
    got = file_sha256(weights_file(path))
    if got != expected:
        raise CheckpointError(
            f"checkpoint {uri}: sha256 of {weights_file(path).name} is {got}, expected {expected}")


# ---- sources --------------------------------------------------------------------------------
def hf_cache_root() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(home) / "hub"


def hf_snapshot(repo: str, revision: str | None = None) -> Path:
    """The local snapshot of ``repo`` in the Hugging Face cache; never touches the network."""
    base = hf_cache_root() / f"models--{repo.replace('/', '--')}"
    ref = revision or "main"
    commit = ref
    if (base / "refs" / ref).is_file():
        commit = (base / "refs" / ref).read_text().strip()
    snapshot = base / "snapshots" / commit
    if not snapshot.is_dir():
        raise CheckpointError(
            f"hf:{repo}@{ref} is not in the Hugging Face cache {hf_cache_root()} (nothing is "
            "downloaded at run time: populate the cache first, e.g. with `hf download`)")
    return snapshot


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _s3_listing(uri: str) -> list[tuple[str, int]]:
    import pyarrow.fs as pafs

    from access.io import filesystem_for

    fs, prefix = filesystem_for(uri.rstrip("/"))
    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    files = [(i.path[len(prefix):].lstrip("/"), int(i.size or 0)) for i in infos
             if i.type == pafs.FileType.File]
    if not files:
        raise CheckpointError(f"checkpoint {uri}: no objects under this prefix (an s3:// "
                              "checkpoint is a directory: config and weights)")
    return sorted(files)


def posix_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def copy_s3_checkpoint(uri: str, sha256: str | None) -> Path:
    """Copy the objects under ``uri`` into the node's model cache once; return the local copy.

    The cache entry is named after the URI and the pin (or, unpinned, the listing's names and
    sizes), so a changed object is a new entry. Concurrent actors on one node wait on a lock;
    the copy goes to a temporary directory that is renamed into place when complete."""
    from access.io import read_bytes

    listing = _s3_listing(uri)
    pin = sha256 or hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    key = hashlib.sha256(f"{uri.rstrip('/')}\n{pin}".encode()).hexdigest()[:24]
    cache = model_cache_dir()
    dest = cache / f"{posix_name(uri.rstrip('/'))}-{key}"
    if dest.is_dir():
        return dest
    with _locked(cache / f".{dest.name}.lock"):
        if dest.is_dir():  # another actor on this node finished the copy while we waited
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=cache))
        try:
            for rel, _ in listing:
                src = f"{uri.rstrip('/')}/{rel}"
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(read_bytes(src))
            verify_sha256(tmp, sha256, uri)
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("copied checkpoint %s to %s", uri, dest)
    return dest


def resolve_checkpoint(uri: str, sha256: str | None = None) -> Path:
    """A local path holding the checkpoint named by ``uri``, verified against ``sha256``.

    Raises :class:`CheckpointError` when it is missing or does not match."""
    match = _HF_RE.match(uri)
    if match:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = hf_snapshot(match["repo"], match["rev"])
    elif uri.startswith("s3://"):
        try:
            path = copy_s3_checkpoint(uri, sha256)
        except (OSError, FileNotFoundError) as exc:
            raise CheckpointError(f"checkpoint {uri}: cannot copy from S3: {exc}") from None
    elif "://" in uri and not uri.startswith("file://"):
        raise CheckpointError(f"checkpoint {uri}: use a path, s3://bucket/prefix or hf:org/name")
    else:
        path = Path(uri.removeprefix("file://")).expanduser().resolve()
        if not path.exists():
            raise CheckpointError(f"checkpoint {uri} not found (resolved to {path})")
    verify_sha256(path, sha256, uri)
    return path


# ---- loaders --------------------------------------------------------------------------------
@dataclass
class OpenClipBundle:
    """An open_clip model in eval mode with what its inputs need."""

    model: Any
    tokenizer: Any
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str
    interpolation: str
    fill_color: int

    def model_input(self, pixels: Any) -> Any:
        """:func:`normalise_pixels` with this model's mean and std. The one place the scorers,
        the similarity and the demo evaluation turn pixels into model input, so their scores
        agree."""
        return normalise_pixels(pixels, self.mean, self.std)


def normalise_pixels(pixels: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    """uint8 ``(N, H, W, 3)`` pixels (a torch tensor, already through ``decode_media``'s
    geometric transform) -> normalised float ``(N, 3, H, W)`` model input, on the pixels' device.
    The demo model trains on exactly this input."""
    import torch

    mean_t = torch.tensor(mean, device=pixels.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.permute(0, 3, 1, 2).float() / 255.0 - mean_t) / std_t


def open_clip_config(path: Path) -> dict[str, Any]:
    config_path = path / "open_clip_config.json"
    if not config_path.is_file():
        raise CheckpointError(f"checkpoint {path}: open_clip_config.json is missing")
    config: dict[str, Any] = json.loads(config_path.read_text())
    if "model_cfg" not in config:
        raise CheckpointError(f"checkpoint {path}: open_clip_config.json has no model_cfg")
    return config


def load_open_clip(path: Path, device: str = "cpu") -> OpenClipBundle:
    """Load an open_clip checkpoint directory (``local-dir:``) and its tokenizer."""
    import open_clip

    config = open_clip_config(path)
    model = open_clip.create_model(f"local-dir:{path}", device=device, weights_only=True,
                                   require_pretrained=True)
    model.eval()
    text_cfg = config["model_cfg"]["text_cfg"]
    own = config.get("xmodal_tokenizer") or {}
    if own.get("bpe"):
        tokenizer = open_clip.SimpleTokenizer(bpe_path=str(path / own["bpe"]),
                                              context_length=text_cfg.get("context_length", 77))
    else:
        tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    vocab = getattr(tokenizer, "vocab_size", None)
    if vocab is not None and vocab > int(text_cfg.get("vocab_size", 49408)):
        raise CheckpointError(f"checkpoint {path}: tokenizer has {vocab} tokens, the model "
                              f"{text_cfg.get('vocab_size')}")
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp.get("size", 224)
    # No global torch.set_grad_enabled(False) here: it leaked into every later caller in the
    # process (a training step after a scoring stage had no gradients). Callers run their
    # forwards under torch.inference_mode().
    return OpenClipBundle(
        model=model, tokenizer=tokenizer,
        image_size=int(size[0] if isinstance(size, (list, tuple)) else size),
        mean=tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)),
        resize_mode=str(pp.get("resize_mode", "shortest")),
        interpolation=str(pp.get("interpolation", "bicubic")),
        fill_color=int(pp.get("fill_color", 0)),
    )


@dataclass
class ClapBundle:
    """A transformers ClapModel in eval mode and its ClapProcessor."""

    model: Any
    processor: Any

    @property
    def sampling_rate(self) -> int:
        return int(self.processor.feature_extractor.sampling_rate)

    @property
    def max_samples(self) -> int:
        return int(self.processor.feature_extractor.nb_max_samples)


def load_clap(path: Path, device: str = "cpu") -> ClapBundle:
    """Load a ClapModel/ClapProcessor directory with ``local_files_only=True``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import ClapModel, ClapProcessor

    if not (path / "config.json").is_file():
        raise CheckpointError(f"checkpoint {path}: config.json is missing")
    model = ClapModel.from_pretrained(str(path), local_files_only=True)
    # PreTrainedModel.to is decorated with functools.wraps(nn.Module.to); typeshed's _Wrapped has no
    # __get__, so mypy does not bind self and reads ``device`` as the self argument.
    model = model.to(device).eval()  # type: ignore[arg-type]
    processor = ClapProcessor.from_pretrained(str(path), local_files_only=True)
    return ClapBundle(model=model, processor=processor)
