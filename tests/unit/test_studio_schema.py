"""Studio shows the graph's input and output schemas: every field carries a description."""

from __future__ import annotations

from typing import Any

import pytest

from latm.graph.builder import build_graph, graph


def undescribed(schema: dict[str, Any]) -> list[str]:
    """Every property of a JSON schema (its definitions included) that has no description."""
    missing = []
    objects = {"": schema, **{f"$defs.{k}": v for k, v in schema.get("$defs", {}).items()}}
    for where, obj in objects.items():
        for name, prop in obj.get("properties", {}).items():
            if not str(prop.get("description", "")).strip():
                missing.append(f"{where}.{name}".lstrip("."))
    return missing


@pytest.mark.parametrize("side", ["input", "output"])
def test_every_field_of_the_graphs_schema_has_a_description(side: str) -> None:
    schema = graph.get_input_jsonschema() if side == "input" else graph.get_output_jsonschema()
    assert len(schema["properties"]) >= 4
    assert undescribed(schema) == []


def test_the_helper_finds_a_field_without_description() -> None:
    schema = {"properties": {"a": {"type": "string"}}, "$defs": {"X": {"properties": {"b": {}}}}}
    assert undescribed(schema) == ["a", "$defs.X.b"]


def test_descriptions_leave_the_usage_reducer_in_place() -> None:
    """``usage`` still sums over nodes (the reducer stays LangGraph's last metadata)."""
    from langgraph.channels.binop import BinaryOperatorAggregate

    compiled = build_graph()
    assert isinstance(compiled.builder.channels["usage"], BinaryOperatorAggregate)
    described = compiled.get_output_jsonschema()["properties"]
    assert "maker" in described["usage"]["description"]
    assert "solve" in described["path"]["description"]
