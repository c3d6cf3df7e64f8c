"""LATM's graph: state schemas, runtime context and wiring.

``from latm.graph import graph`` gives the compiled graph (no checkpointer or
store); ``build_graph(checkpointer=..., store=...)`` compiles your own.
"""

from latm.graph.context import Context
from latm.graph.state import InputState, OutputState, State

from latm.graph.builder import build_graph, graph  # isort: skip  (needs the modules above)

__all__ = ["Context", "InputState", "OutputState", "State", "build_graph", "graph"]
