"""LATM's verified tools as LangChain tools, run by real ToolNodes and ReAct agents.

The agents' models are scripted tool-calling models; the tools run in the real
sandbox executor.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.store.memory import InMemoryStore
from pydantic import Field

from latm.graph.context import Context
from latm.integrations.langchain import (
    RETRIEVE_TOOLS,
    LatmToolkit,
    as_langchain_tools,
    create_tool_retrieving_agent,
)
from latm.integrations.tools import build_spec, is_verified, literal
from latm.repository import ToolRepository, VerificationStrength

from .made_tools import SCALE_CODE, failed, passed, store_examples, store_tool
from .scripted import ScriptedChatModel

warnings.filterwarnings("ignore", message=".*create_react_agent.*")


def react_agent(model: Any, tools: Any) -> Any:
    from langgraph.prebuilt import create_react_agent

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_react_agent(model, tools)


class ToolCallingModel(ScriptedChatModel):
    """A scripted model that records the tools bound to it at each turn."""

    bound: list[list[str]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ToolCallingModel:  # type: ignore[override]
        self.bound.append([t.name if isinstance(t, BaseTool) else str(t) for t in tools])
        return self


def calls(*pairs: tuple[str, dict[str, Any]], text: str = "") -> AIMessage:
    return AIMessage(
        content=text,
        tool_calls=[
            {"name": name, "args": args, "id": f"call-{i}", "type": "tool_call"}
            for i, (name, args) in enumerate(pairs)
        ],
    )


def context(**kw: Any) -> Context:
    return Context(**{"exec_timeout_s": 2.0, **kw})


@pytest.fixture
def repo() -> ToolRepository:
    repository = ToolRepository(InMemoryStore(), "acme")
    store_examples(repository)
    return repository


def by_name(tools: list[BaseTool]) -> dict[str, BaseTool]:
    return {t.name: t for t in tools}


def test_only_verified_tools_of_the_namespace_are_exposed(repo):
    tools = by_name(as_langchain_tools(repo, context=context()))
    assert sorted(tools) == ["hostile", "scaling", "word_sorting"]
    other = ToolRepository(repo.store, "other")
    assert as_langchain_tools(other, context=context()) == []
    store_tool(other, "their_tool", SCALE_CODE, "scale")
    assert "their_tool" not in by_name(as_langchain_tools(repo, context=context()))
    assert [t.name for t in as_langchain_tools(other, context=context())] == ["their_tool"]
    only = as_langchain_tools(repo, context=context(), task_types=["scaling"])
    assert [t.name for t in only] == ["scaling"]


def test_verified_means_the_calls_or_the_direct_entry_passed(repo):
    record = repo.get("word_sorting")
    assert record is not None and is_verified(record)
    assert not is_verified(record.model_copy(update={"verification": []}))
    assert not is_verified(record.model_copy(update={"verification": [passed(), failed()]}))
    direct = [{**passed(), "check": "direct"}, {**failed(), "check": "call"}]
    assert is_verified(record.model_copy(update={"verification": direct}))


def test_a_retired_tool_is_not_exposed(repo):
    record = repo.get("hostile")
    for _ in range(2):
        repo.record_use(record, "error", "boom")
    names = [t.name for t in as_langchain_tools(repo, context=context(max_tool_failures=2))]
    assert "hostile" not in names and "word_sorting" in names


def test_args_schema_comes_from_the_signature(repo):
    tools = by_name(as_langchain_tools(repo, context=context()))
    sort_schema = tools["word_sorting"].tool_call_schema.model_json_schema()
    assert sort_schema["required"] == ["words"]
    assert sort_schema["properties"]["words"]["type"] == "array"
    assert sort_schema["properties"]["words"]["items"] == {"type": "string"}

    schema = tools["scaling"].tool_call_schema.model_json_schema()
    props = schema["properties"]
    assert sorted(schema["required"]) == ["factor", "values"]
    assert props["values"]["items"] == {"type": "number"}
    assert "type" not in props["factor"]  # unannotated: any JSON value
    assert props["factor"]["description"] == "What to multiply them by."
    assert props["offset"]["type"] == "integer" and props["offset"]["default"] == 0
    assert {"type": "null"} in props["label"]["anyOf"]
    assert "os.sep" in props["mode"]["description"]  # not a literal: the function's default
    assert props["extra"]["type"] == "object"


def test_description_has_docstring_signature_and_demos(repo):
    tool = by_name(as_langchain_tools(repo, context=context()))["word_sorting"]
    assert tool.description.startswith("Sort words alphabetically")
    assert "def sort_words(words: list[str]) -> str" in tool.description
    assert "sort_words(['pear', 'apple'])" in tool.description
    assert len(tool.description) <= 1024


def test_a_weakly_verified_tool_says_so_to_agents(repo):
    weak = VerificationStrength(
        level="weak", cases=2, blind_cases=2, guess_chance=0.5, candidates=3,
        lucky_pass=0.75, threshold=0.01,
    )  # fmt: skip
    record = repo.get("word_sorting")
    assert record is not None
    repo.put(record.model_copy(update={"strength": weak, "version": record.version + 1}))
    tools = by_name(as_langchain_tools(repo, context=context()))
    assert tools["word_sorting"].description.startswith("WEAKLY VERIFIED")
    assert "chance 0.75" in tools["word_sorting"].description
    assert len(tools["word_sorting"].description) <= 1024
    strong = weak.model_copy(update={"level": "verified", "lucky_pass": 0.001})
    repo.put(record.model_copy(update={"strength": strong, "version": record.version + 2}))
    tools = by_name(as_langchain_tools(repo, context=context()))
    assert not tools["word_sorting"].description.startswith("WEAKLY")
    assert tools["word_sorting"].description.startswith("Sort words alphabetically")


def test_tool_calls_run_in_the_sandbox_not_the_host(repo):
    tools = by_name(as_langchain_tools(repo, context=context()))
    assert tools["word_sorting"].invoke({"words": ["pear", "fig", "apple"]}) == "apple fig pear"
    pid = tools["hostile"].invoke({"action": "pid"})
    assert pid.isdigit() and int(pid) != os.getpid()
    scaled = tools["scaling"].invoke({"values": [1, 2.5], "factor": 2, "offset": 1, "label": "x"})
    assert scaled == "x: 3.0 6.0"  # list[float]: the 1 arrives as 1.0
    # An argument left out takes the function's own default (os.sep is not a literal).
    assert tools["scaling"].invoke({"values": [1], "factor": 3, "mode": None}) == "3.0"


def test_tool_node_turns_every_failure_into_an_error_message(repo):
    builder = StateGraph(MessagesState)
    builder.add_node(
        "tools", ToolNode(as_langchain_tools(repo, context=context(exec_timeout_s=1.0)))
    )
    builder.add_edge(START, "tools")
    node = builder.compile()
    message = calls(
        ("word_sorting", {"words": ["b", "a"]}),
        ("hostile", {"action": "raise"}),
        ("hostile", {"action": "loop"}),
        ("hostile", {"action": "die"}),
        ("word_sorting", {"words": "not a list"}),
        ("scaling", {"values": [1], "factor": 2, "bogus": 1}),
    )
    out: list[ToolMessage] = node.invoke({"messages": [message]})["messages"][1:]
    assert [m.tool_call_id for m in out] == [f"call-{i}" for i in range(6)]
    assert (out[0].content, out[0].status) == ("a b", "success")
    assert all(m.status == "error" for m in out[1:]), [m.content for m in out]
    assert (
        "tool hostile (v1) failed on hostile(action='raise'): error: ValueError" in out[1].content
    )
    assert "timeout" in out[2].content
    assert "killed" in out[3].content or "died" in out[3].content
    assert out[4].content.startswith("invalid arguments for tool word_sorting: words:")
    assert "bogus" in out[5].content


def test_a_react_agent_calls_a_made_tool(repo):
    model = ToolCallingModel(
        messages=iter(
            [
                calls(("word_sorting", {"words": ["pear", "fig", "apple"]})),
                AIMessage("The sorted words are: apple fig pear"),
            ]
        )
    )
    agent = react_agent(model, as_langchain_tools(repo, context=context()))
    out = agent.invoke({"messages": [HumanMessage("Sort: pear fig apple")]})
    messages: list[BaseMessage] = out["messages"]
    tool_messages = [m for m in messages if isinstance(m, ToolMessage)]
    assert [(m.name, m.content) for m in tool_messages] == [("word_sorting", "apple fig pear")]
    assert messages[-1].content == "The sorted words are: apple fig pear"
    assert sorted(model.bound[0]) == ["hostile", "scaling", "word_sorting"]
    # The second turn saw the tool's answer.
    assert model.received[1][-1].content == "apple fig pear"


def test_retrieval_finds_the_few_fitting_tools(repo):
    toolkit = LatmToolkit(repo, context=context())
    found = toolkit.retrieve_tools("sort these words alphabetically", k=1)
    assert [t.name for t in found] == ["word_sorting"]
    assert toolkit.retrieve_tools("zzz qqq", k=2) == []
    # The unverified tool matches the query just as well, and is never returned.
    assert "unverified" not in [t.name for t in toolkit.retrieve_tools("sort words", k=5)]


def test_a_retrieving_agent_binds_only_what_it_retrieved(repo):
    for i in range(30):  # a large repository: 30 more tools the agent never sees
        store_tool(repo, f"filler_{i}", SCALE_CODE, "scale", description=f"Scale set {i}.")
    model = ToolCallingModel(
        messages=iter(
            [
                calls((RETRIEVE_TOOLS, {"query": "sort words alphabetically"})),
                calls(("word_sorting", {"words": ["b", "c", "a"]})),
                AIMessage("a b c"),
            ]
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = create_tool_retrieving_agent(model, repo, k=2, context=context())
    out = agent.invoke({"messages": [HumanMessage("Sort: b c a")]})
    tool_messages = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert tool_messages[0].name == RETRIEVE_TOOLS
    assert "word_sorting" in tool_messages[0].content
    assert tool_messages[1].content == "a b c"
    assert model.bound[0] == [RETRIEVE_TOOLS]
    assert model.bound[1][0] == RETRIEVE_TOOLS and "word_sorting" in model.bound[1]
    assert len(model.bound[1]) <= 3
    assert out["messages"][-1].content == "a b c"


def test_arguments_become_literals_only(repo):
    spec = build_spec(repo.get("scaling"), "acme")  # type: ignore[arg-type]
    assert spec.render_call({"values": [1.5], "factor": float("inf")}) == (
        "scale(values=[1.5], factor=float('inf'))"
    )
    assert literal({"a": (1,), "b": {2, 1}, "c": None}) == "{'a': (1,), 'b': {1, 2}, 'c': None}"

    class Sneaky:
        def __repr__(self) -> str:
            return "__import__('os').system('true')"

    tool = by_name(as_langchain_tools(repo, context=context()))["scaling"]
    result = tool.invoke(
        {
            "name": "scaling",
            "args": {"values": [1], "factor": Sneaky()},
            "id": "1",
            "type": "tool_call",
        }
    )
    assert result.status == "error" and "cannot be passed to the tool" in result.content


def test_a_dead_sandbox_is_a_clear_tool_error(repo):
    class NoSandbox:
        name = "none"

        def run(self, *args: Any, **kwargs: Any) -> Any:
            from latm.sandbox import SandboxUnavailableError

            raise SandboxUnavailableError("no isolation available")

    tools = by_name(as_langchain_tools(repo, context=context(), executor=NoSandbox()))
    message = tools["word_sorting"].invoke(
        {"name": "word_sorting", "args": {"words": ["a"]}, "id": "1", "type": "tool_call"}
    )
    assert message.status == "error"
    assert "cannot run generated code: no isolation available" in message.content


def test_without_a_repository_the_configured_one_is_used(monkeypatch, tmp_path):
    """As the CLI: LATM_STORE_PATH (set by the unit tests' conftest) and LATM_NAMESPACE."""
    from latm.backends import open_local_store

    store_tool(
        ToolRepository(open_local_store(os.environ["LATM_STORE_PATH"]), "team"),
        "scaling",
        SCALE_CODE,
        "scale",
    )
    assert as_langchain_tools(context=context()) == []  # the default namespace has none
    monkeypatch.setenv("LATM_NAMESPACE", "team")
    assert [t.name for t in as_langchain_tools()] == ["scaling"]


ODD_CODE = '''\
import typing
from typing import Literal, Optional


def odd(a, b: "list[int]", /, c: Optional[int] = None, d: Literal["x", "y"] = "x",
        e: tuple[int, str] = (1, "a"), *rest: int, g: dict[int, float], h: set[str] = set(),
        **more: typing.Any) -> str:
    """Echo how it was called."""
    return repr((a, b, c, d, e, rest, g, sorted(h), more))
'''


def test_odd_signatures_get_a_schema_and_calls_that_run(repo):
    store_tool(repo, "odd", ODD_CODE, "odd")
    tool = by_name(as_langchain_tools(repo, context=context()))["odd"]
    props = tool.tool_call_schema.model_json_schema()["properties"]
    assert props["b"]["items"] == {"type": "integer"}
    assert props["d"]["enum"] == ["x", "y"]
    assert props["e"]["prefixItems"] == [{"type": "integer"}, {"type": "string"}]
    assert props["rest"]["items"] == {"type": "integer"}
    args = {"a": {"k": [1]}, "b": [1, 2], "g": {"3": 1.5}, "rest": [7, 8], "more": {"z": None}}
    assert tool.invoke(args) == repr(
        ({"k": [1]}, [1, 2], None, "x", (1, "a"), (7, 8), {3: 1.5}, [], {"z": None})
    )
    # With *rest, the parameters before it go positionally (their defaults filled in);
    # without it, by keyword.
    assert tool.invoke({**args, "d": "y"}).endswith(
        "'y', (1, 'a'), (7, 8), {3: 1.5}, [], {'z': None})"
    )
    plain = {"a": 1, "b": [1], "g": {}, "c": 5, "h": ["q"]}
    assert tool.invoke(plain) == repr((1, [1], 5, "x", (1, "a"), (), {}, ["q"], {}))
    message = tool.invoke(
        {"name": "odd", "args": {"b": [1], "g": {}}, "id": "1", "type": "tool_call"}
    )
    assert message.status == "error" and "a: Field required" in message.content


def test_names_are_task_types_and_stay_distinct(repo):
    store_tool(repo, "word sorting", SCALE_CODE, "scale")  # sanitizes to a taken name
    store_tool(repo, "retrieve_tools", SCALE_CODE, "scale")
    toolkit = LatmToolkit(repo, context=context())
    names = {t.metadata["latm_task_type"]: t.name for t in toolkit.get_tools()}
    assert names["word_sorting"] == "word_sorting"
    assert names["word sorting"] == "word_sorting_2"
    assert names["retrieve_tools"] == "retrieve_tools_2"  # the retriever keeps its name


def test_an_async_agent_calls_the_tools_off_its_event_loop(repo):
    import asyncio

    model = ToolCallingModel(
        messages=iter(
            [
                calls(("word_sorting", {"words": ["b", "a"]}), ("hostile", {"action": "pid"})),
                AIMessage("done"),
            ]
        )
    )
    agent = react_agent(model, as_langchain_tools(repo, context=context()))
    out = asyncio.run(agent.ainvoke({"messages": [HumanMessage("go")]}))
    results = {m.name: m.content for m in out["messages"] if isinstance(m, ToolMessage)}
    assert results["word_sorting"] == "a b" and int(results["hostile"]) != os.getpid()


def test_a_tool_the_graph_made_is_callable_by_an_agent(make_context):
    from latm.graph.builder import build_graph

    from .scripted import SORT_CODE, bbh, maker_reply

    examples = bbh("word_sorting")
    store = InMemoryStore()
    maker = ToolCallingModel(
        messages=iter([AIMessage(maker_reply(SORT_CODE, [e["input"] for e in examples[3:6]]))])
    )
    out = build_graph(store=store).invoke(
        {"examples": examples[:6], "task_type": "word_sorting"},
        context=make_context(maker, None, namespace="made"),
    )
    assert out["error"] is None and out["tool"]["version"] == 1
    tools = as_langchain_tools(ToolRepository(store, "made"), context=context())
    assert [t.name for t in tools] == ["word_sorting"]
    assert "Example: 'Sort the following words alphabetically" in tools[0].description
    assert tools[0].invoke({"words": ["b", "c", "a"]}) == "a b c"


def test_an_integer_too_large_to_print_is_a_clear_call_error(repo):
    from latm.integrations.tools import ToolRunner

    spec = build_spec(repo.get("scaling"), "acme")  # type: ignore[arg-type]
    outcome = ToolRunner(context()).call(spec, {"values": [10**5000], "factor": 2})
    assert not outcome.ok and "integer argument is too large" in str(outcome)
