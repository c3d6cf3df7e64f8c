"""The chat entry: a ``messages`` input answered with an AI message (Studio's Chat mode)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph

from latm.chat import chat_turn, question, reply
from latm.graph.builder import build_graph, graph

from .scripted import SORT_CODE, bbh, maker_reply, scripted, user_reply

EXAMPLES = bbh("word_sorting")
DEMOS_AND_VALIDATION = EXAMPLES[:6]
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]
HELD_OUT = EXAMPLES[20]


def test_the_schemas_offer_messages_on_both_sides():
    for schema in (graph.get_input_jsonschema(), graph.get_output_jsonschema()):
        messages = schema["properties"]["messages"]
        assert messages["type"] == "array" and "human message" in messages["description"]
        assert messages["items"]["properties"]["content"]["description"]


def test_only_a_last_human_message_is_a_question():
    assert question({}) is None
    assert question({"messages": [HumanMessage("  hi ")]}) == "hi"
    assert question({"messages": [HumanMessage("hi"), AIMessage("hello")]}) is None
    assert question({"messages": [HumanMessage("   ")]}) is None
    blocks = HumanMessage(content=[{"type": "text", "text": "sort these"}])
    assert question({"messages": [blocks]}) == "sort these"
    assert reply({"answer": "a b"}) == AIMessage("a b")
    assert "boom" in str(reply({"error": "boom"}).content)  # type: ignore[union-attr]
    assert reply({"route": "miss"}) is None


def test_a_human_message_is_the_task_and_the_answer_comes_back_as_an_ai_message(
    store, make_context
):
    ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), scripted([user_reply(HELD_OUT["input"])])
    )
    out = build_graph(store=store).invoke(
        {
            "messages": [{"role": "human", "content": HELD_OUT["input"]}],
            "examples": DEMOS_AND_VALIDATION,
            "task_type": "word_sorting",
        },
        context=ctx,
    )
    assert out["error"] is None and out["answer"] == HELD_OUT["target"]
    human, answer = out["messages"]
    assert isinstance(human, HumanMessage) and human.content == HELD_OUT["input"]
    assert isinstance(answer, AIMessage) and answer.content == HELD_OUT["target"]


def test_a_chat_on_a_thread_answers_each_turn(store, make_context):
    """Turn after turn on one thread (as Studio's Chat mode sends them); the tool is reused."""
    second, third = EXAMPLES[30], EXAMPLES[31]
    ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]),
        scripted([user_reply(q["input"]) for q in (HELD_OUT, second, third)]),
    )
    app = build_graph(store=store, checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "chat"}}
    first = app.invoke(
        {
            "messages": [("human", HELD_OUT["input"])],
            "examples": DEMOS_AND_VALIDATION,
            "task_type": "word_sorting",
        },
        config,
        context=ctx,
    )
    assert first["messages"][-1].content == HELD_OUT["target"]
    out = app.invoke({"messages": [("human", second["input"])]}, config, context=ctx)
    assert out["cache_hit"] is True and out["answer"] == second["target"]
    assert [m.type for m in out["messages"]] == ["human", "ai", "human", "ai"]
    assert out["messages"][-1].content == second["target"]
    # a task request on the same thread answers its task, and the conversation is left alone
    out = app.invoke({"task": third["input"]}, config, context=ctx)
    assert out["answer"] == third["target"] and len(out["messages"]) == 4


def test_a_failed_chat_turn_says_why_in_an_ai_message(store, make_context):
    out = build_graph(store=store).invoke(
        {"messages": [HumanMessage("What is the capital of France?")]},
        context=make_context(scripted([]), scripted([])),
    )
    assert out["error"] and out["answer"] is None
    last = out["messages"][-1]
    assert isinstance(last, AIMessage) and out["error"] in str(last.content)


def test_a_messages_state_parent_calls_latm_as_a_node(store, make_context):
    """A chat agent's graph (``MessagesState``) drops LATM in as a node: one answer appended."""
    maker_ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), scripted([user_reply(HELD_OUT["input"])])
    )
    build_graph(store=store).invoke(
        {"task": HELD_OUT["input"], "examples": DEMOS_AND_VALIDATION, "task_type": "word_sorting"},
        context=maker_ctx,
    )
    parent = StateGraph(MessagesState)
    parent.add_node("latm", build_graph())
    parent.add_edge(START, "latm")
    parent.add_edge("latm", END)
    app = parent.compile(store=store)
    asked = EXAMPLES[40]
    out = app.invoke(
        {"messages": [HumanMessage(asked["input"])]},
        context=make_context(scripted([]), scripted([user_reply(asked["input"])])),
    )
    human, answer = out["messages"]
    assert human.content == asked["input"]
    assert isinstance(answer, AIMessage) and answer.content == asked["target"]


def test_the_answer_message_ends_the_messages_stream(store, make_context):
    """Chat UIs read ``stream_mode="messages"``: the answer arrives there as a whole message."""
    ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), scripted([user_reply(HELD_OUT["input"])])
    )
    streamed = list(
        build_graph(store=store).stream(
            {
                "messages": [HumanMessage(HELD_OUT["input"])],
                "examples": DEMOS_AND_VALIDATION,
                "task_type": "word_sorting",
            },
            context=ctx,
            stream_mode="messages",
        )
    )
    last, meta = streamed[-1]
    assert isinstance(last, AIMessage) and last.content == HELD_OUT["target"]
    assert meta["langgraph_node"] == "use"
    # the models' own tokens came before it, each naming its role
    assert {m.get("latm_role") for _, m in streamed[:-1]} == {"maker", "user"}


def test_chat_turn_wraps_a_node_body_of_steps_as_well_as_a_plain_node():
    """A body that yields its I/O steps gets the same chat handling once it is driven."""

    def use_steps(state: Any, runtime: Any) -> Any:
        got = yield ("io", state["task"])  # a step; the driver sends its result back
        return {"answer": got.upper()}

    def use(state: Any, runtime: Any) -> Any:
        return {"answer": state["task"].upper()}

    state = {"task": "old", "messages": [HumanMessage("sort b a")]}
    plain = chat_turn(use)(state, None)
    steps = chat_turn(use_steps)(state, None)
    assert steps.__class__.__name__ == "generator" and chat_turn(use_steps).__name__ == "use_steps"
    assert next(steps) == ("io", "sort b a")
    try:
        steps.send("sort b a")
    except StopIteration as done:
        driven = done.value
    assert (
        driven
        == plain
        == {
            "answer": "SORT B A",
            "task": "sort b a",
            "messages": [AIMessage("SORT B A")],
        }
    )
    # outside a chat turn both run as they are
    assert chat_turn(use)({"task": "x"}, None) == {"answer": "X"}
