"""A small deterministic embedding function for the server's semantic index in tests.

Words are hashed into 64 buckets and the counts normalized: texts sharing words
score high. It stands in for a real embedding model (which the tests cannot
download) to exercise ``store.index`` in ``langgraph.json`` end to end.
"""

from __future__ import annotations

import hashlib
import math
import re

DIMS = 64


def _vector(text: str) -> list[float]:
    counts = [0.0] * DIMS
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        counts[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIMS] += 1.0
    norm = math.sqrt(sum(c * c for c in counts)) or 1.0
    return [c / norm for c in counts]


def embed(texts: list[str]) -> list[list[float]]:
    """Embed each text as a normalized 64-bucket bag of hashed words."""
    return [_vector(t) for t in texts]
