"""LATM's graph: state schemas (:mod:`.state`), runtime context (:mod:`.context`) and wiring.

The package itself holds the leaves only, so that every module may import them.
The wiring, which imports the nodes, is :mod:`latm.graph.builder`:
``from latm.graph.builder import graph`` gives the compiled graph (no
checkpointer or store); ``build_graph(checkpointer=..., store=...)`` compiles
your own.
"""

from latm.graph.context import Context
from latm.graph.state import InputState, OutputState, State

__all__ = ["Context", "InputState", "OutputState", "State"]
