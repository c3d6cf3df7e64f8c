"""LATM's graph: state schemas, runtime context and wiring.

``from latm.graph import graph`` gives the compiled graph (no checkpointer or
store); ``build_graph(checkpointer=..., store=...)`` compiles your own.
"""

from __future__ import annotations

from typing import Any

from latm.graph.context import Context
from latm.graph.state import InputState, OutputState, State

__all__ = ["Context", "InputState", "OutputState", "State", "build_graph", "graph"]


def __getattr__(name: str) -> Any:
    """Import the wiring lazily: it needs the nodes, which need this package."""
    if name in ("graph", "build_graph"):
        from latm.graph import builder

        return getattr(builder, name)
    raise AttributeError(f"module 'latm.graph' has no attribute {name!r}")
