"""LATM's tools for other agents: LangChain tools and an MCP server.

:mod:`.langchain` and :mod:`.mcp` both expose the verified tools of one
repository namespace, described from their signature, docstring and usage
demos (:mod:`.tools`), and run every call in the sandbox executor, as the
graph's ``use`` node does.
"""
