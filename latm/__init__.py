"""LATM: Large Language Models as Tool Makers, as a LangGraph state machine.

``from latm.graph.builder import graph`` gives the compiled graph; ``build_graph``
compiles one with your own checkpointer or store; ``Context`` holds the run's
settings.
"""

__version__ = "0.1.0"
