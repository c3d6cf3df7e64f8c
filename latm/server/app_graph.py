"""The graph as ``langgraph.json`` serves it, with the server's tenancy said at start-up.

The namespace of a run is its caller's tenant, from the server's custom
authentication (:mod:`latm.auth`); without authentication every client shares
the deployment's one namespace, which is logged here when the server loads the graph.
"""

from __future__ import annotations

import logging
import os

from latm.graph.builder import build_graph
from latm.graph.context import Context

log = logging.getLogger("latm.server")

if not os.environ.get("LANGGRAPH_AUTH"):
    log.warning(
        "LATM: the server has no authentication configured ('auth' in langgraph.json): "
        "every client shares the tool namespace %r",
        Context().namespace,
    )

graph = build_graph()
"""The compiled graph; the server supplies its checkpointer and store."""
