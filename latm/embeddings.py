"""Embedding functions for the tool repository's semantic index.

A store with a semantic index (pgvector on PostgreSQL, sqlite-vec on SQLite)
needs an embedding function. ``LATM_EMBEDDINGS`` (``Context.embeddings``) names
it:

* ``none``: no index; the repository ranks tools lexically.
* ``local``: the key-less local model :mod:`latm.local.embedder` installs
  (``latm local install``): all-MiniLM-L6-v2, as a static token table
  distilled from it at install time (256 dimensions, well under a millisecond
  a text); ``local:contextual`` runs the full encoder in numpy instead (384
  dimensions, tens to hundreds of milliseconds a text on a small CPU).
* ``hash`` or ``hash:DIMS``: :class:`HashEmbeddings`, a deterministic hashed
  bag of words computed locally. It needs no model and no network, so it is the
  test fallback; it matches shared words, not meanings.
* ``openai:MODEL``: an OpenAI-compatible embeddings endpoint through
  ``langchain_openai`` (``LATM_EMBEDDINGS_BASE_URL`` for a local server such as
  vLLM or llama.cpp, the key in the variable ``LATM_EMBEDDINGS_API_KEY_ENV``
  names, default ``OPENAI_API_KEY``).
* ``PROVIDER:MODEL`` otherwise: langchain's ``init_embeddings`` when the
  ``langchain`` package is installed.

The dimension of a model's vectors is fixed when the store is first set up;
changing the embedding model of an existing database needs a new database
(export the tools, import them into the new one).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
from typing import Any

from langchain_core.embeddings import Embeddings

from latm.local.embedder import LocalEmbeddings, embedder_is_installed
from latm.local.paths import LocalError, LocalPaths

_WORD = re.compile(r"[a-z0-9]+")
DEFAULT_HASH_DIMS = 256


class HashEmbeddings(Embeddings):
    """A deterministic hashed bag-of-words embedding (offline and test fallback).

    Each lower-cased word and each pair of adjacent words is hashed (SHA-256)
    to one of ``dims`` buckets with a sign; the vector is L2-normalized, so
    cosine similarity measures shared vocabulary. No model, no network, the
    same vector on every machine.
    """

    def __init__(self, dims: int = DEFAULT_HASH_DIMS) -> None:
        """Create the embedding.

        Args:
            dims: The vector size (at least 16).
        """
        if dims < 16:
            raise ValueError("hash embeddings need at least 16 dimensions")
        self.dims = dims

    def _embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dims
        words = _WORD.findall(text.lower())
        features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
        for feature in features:
            digest = hashlib.sha256(feature.encode()).digest()
            bucket = int.from_bytes(digest[:4], "big") % self.dims
            vector[bucket] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vector))
        if norm == 0.0:  # no words: a fixed unit vector, so that cosine is defined
            vector[0], norm = 1.0, 1.0
        return [v / norm for v in vector]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed each text."""
        return [self._embed(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        """Embed a query (the same function as for documents)."""
        return self._embed(text)


def local_embeddings_installed() -> bool:
    """Whether the local embedding model is installed (``latm local install``)."""
    return embedder_is_installed(LocalPaths.from_env())


def load_embeddings(spec: str) -> tuple[Embeddings, int] | None:
    """The embedding function a setting names, and its vector size.

    Args:
        spec: ``none``, ``local[:contextual]``, ``hash[:DIMS]``, ``openai:MODEL`` or
            ``PROVIDER:MODEL``
            (see the module docstring); empty means ``none``.

    Returns:
        ``(embeddings, dims)``, or ``None`` for no semantic index.

    Raises:
        ValueError: The setting is malformed or names an unavailable provider.
    """
    spec = spec.strip()
    if spec.lower() in ("", "none", "off"):
        return None
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    if kind == "hash":
        try:
            dims = int(arg) if arg else DEFAULT_HASH_DIMS
        except ValueError as exc:
            raise ValueError(f"bad embeddings setting {spec!r}: use hash or hash:DIMS") from exc
        return HashEmbeddings(dims), dims
    if kind == "local":
        if arg not in ("", "static", "contextual"):
            raise ValueError(f"bad embeddings setting {spec!r}: use local or local:contextual")
        try:
            local = LocalEmbeddings(contextual=arg == "contextual")
        except LocalError as exc:
            raise ValueError(str(exc)) from exc
        return local, local.dims
    if not arg:
        raise ValueError(
            f"bad embeddings setting {spec!r}: use none, local, hash[:DIMS], openai:MODEL "
            "or PROVIDER:MODEL"
        )
    model: Embeddings
    if kind == "openai":
        from langchain_openai import OpenAIEmbeddings

        key_env = os.environ.get("LATM_EMBEDDINGS_API_KEY_ENV") or "OPENAI_API_KEY"
        options: dict[str, Any] = {"model": arg, "api_key": os.environ.get(key_env) or "none"}
        base_url = os.environ.get("LATM_EMBEDDINGS_BASE_URL")
        if base_url:
            options["base_url"] = base_url
            options["check_embedding_ctx_length"] = False  # no tiktoken download for local servers
        model = OpenAIEmbeddings(**options)
    else:
        try:
            from langchain.embeddings import init_embeddings  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ValueError(
                f"embeddings {spec!r} need the 'langchain' package (init_embeddings); "
                "or use openai:MODEL or hash"
            ) from exc
        model = init_embeddings(spec)
    dims = len(model.embed_query("dimension probe"))
    return model, dims
