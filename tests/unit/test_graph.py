"""The LATM graph end to end, with scripted models and the real executor."""

from __future__ import annotations

from typing import Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from latm.graph import Context
from latm.graph.builder import build_graph, graph
from latm.repository import ToolRecord, ToolRepository

from .scripted import (
    BUGGY_SORT_CODE,
    SORT_CODE,
    bbh,
    maker_reply,
    scripted,
    user_reply,
    words_of,
)

EXAMPLES = bbh("word_sorting")
DEMOS_AND_VALIDATION = EXAMPLES[:6]
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]
HELD_OUT = EXAMPLES[20]


def run(store: Any, ctx: Context, **inputs: Any) -> dict[str, Any]:
    return build_graph(store=store).invoke(inputs, context=ctx)


def make_sorting_tool(store: Any, make_context: Any, code: str = SORT_CODE) -> None:
    """Make and store the word_sorting tool (one maker call), answering one question."""
    out = run(
        store,
        make_context(
            scripted([maker_reply(code, VALIDATION_QS)]), scripted([user_reply(HELD_OUT["input"])])
        ),
        task=HELD_OUT["input"],
        examples=DEMOS_AND_VALIDATION,
        task_type="word_sorting",
    )
    assert out["error"] is None


def repo(store: Any) -> ToolRepository:
    return ToolRepository(store, "default")


def test_miss_makes_a_tool_in_one_attempt_and_answers(store, make_context):
    maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS)])
    user = scripted([user_reply(HELD_OUT["input"])])
    out = run(
        store,
        make_context(maker, user),
        task=HELD_OUT["input"],
        examples=DEMOS_AND_VALIDATION,
        task_type="word_sorting",
    )

    assert out["error"] is None
    assert out["answer"] == HELD_OUT["target"]
    assert out["cache_hit"] is False
    assert out["tool"] == {"name": "sort_words", "task_type": "word_sorting", "version": 1}
    assert out["usage"]["maker"]["calls"] == 1 and out["usage"]["user"]["calls"] == 1
    assert out["usage"]["maker"]["total_tokens"] == 120
    record = repo(store).get("word_sorting")
    assert record is not None
    assert record.signature == "def sort_words(words: list[str]) -> str"
    assert record.description == "Sort words alphabetically and join them with single spaces."
    assert [d.question for d in record.demos] == VALIDATION_QS
    assert all(case["passed"] for case in record.verification) and len(record.verification) == 3
    # The maker saw the demos with answers and the validation questions without them.
    first_prompt = maker.prompts[0]
    assert EXAMPLES[0]["target"] in first_prompt
    assert VALIDATION_QS[0] in first_prompt and EXAMPLES[3]["target"] not in first_prompt
    # Output holds only the output schema's keys.
    assert set(out) <= {
        "answer",
        "tool",
        "cache_hit",
        "error",
        "usage",
        "path",
        "verification",
        "routing",
        "messages",
    }
    assert out["messages"] == []  # the chat entry is unused by a task request
    assert out["path"] == "llm"


def test_failed_verification_feeds_errors_back_and_the_retry_passes(store, make_context):
    maker = scripted(
        [maker_reply(BUGGY_SORT_CODE, VALIDATION_QS), maker_reply(SORT_CODE, VALIDATION_QS)]
    )
    user = scripted([user_reply(HELD_OUT["input"])])
    out = run(
        store,
        make_context(maker, user),
        task=HELD_OUT["input"],
        examples=DEMOS_AND_VALIDATION,
        task_type="word_sorting",
    )

    assert out["error"] is None and out["answer"] == HELD_OUT["target"]
    assert out["usage"]["maker"]["calls"] == 2
    retry_prompt = maker.prompts[1]
    expected = EXAMPLES[3]["target"]
    wrong = " ".join(sorted(words_of(EXAMPLES[3]["input"]), reverse=True))
    assert f"Expected: {expected!r}" in retry_prompt
    assert f"got: {wrong!r}" in retry_prompt
    # The retry continues the conversation: the first reply is in its history.
    assert any("reverse=True" in str(m.content) for m in maker.received[1])
    assert repo(store).get("word_sorting").code.strip() == SORT_CODE.strip()


def test_exhausted_attempts_end_with_an_error_and_store_nothing(store, make_context):
    maker = scripted([maker_reply(BUGGY_SORT_CODE, VALIDATION_QS)] * 2)
    user = scripted([])
    out = run(
        store,
        make_context(maker, user, max_attempts=2),
        task=HELD_OUT["input"],
        examples=DEMOS_AND_VALIDATION,
        task_type="word_sorting",
    )

    assert out["answer"] is None
    assert "could not make a verified tool in 2 attempt(s)" in out["error"]
    assert "3 of 3 validation cases failed" in out["error"]
    assert repo(store).records() == []
    assert user.received == []


def test_hit_by_task_type_never_calls_the_maker_or_the_dispatch_model(store, make_context):
    make_sorting_tool(store, make_context)

    question = EXAMPLES[30]
    maker, user = scripted([]), scripted([user_reply(question["input"])])
    out = run(
        store,
        make_context(maker, user),
        task=question["input"],
        task_type="word_sorting",
        examples=DEMOS_AND_VALIDATION,
    )

    assert out["cache_hit"] is True and out["error"] is None
    assert out["answer"] == question["target"]
    assert maker.received == []
    assert len(user.received) == 1 and "usage" in out and "maker" not in out["usage"]
    # the usage demos come as worked turns (question, then the call), the question last
    messages = user.received[0]
    assert [m.type for m in messages] == ["system"] + ["human", "ai"] * 3 + ["human"]
    assert "def sort_words" in str(messages[0].content)
    assert str(messages[1].content) == f"Question: {EXAMPLES[3]['input']}"
    assert "sort_words(" in str(messages[2].content)
    assert str(messages[-1].content) == f"Question: {question['input']}"


def test_hit_without_task_type_is_routed_in_the_embedding_space_with_no_model_call(
    store, make_context
):
    make_sorting_tool(store, make_context)

    question = EXAMPLES[40]
    user = scripted([user_reply(question["input"])])  # the use node's call only
    out = run(store, make_context(scripted([]), user), task=question["input"])

    assert out["cache_hit"] is True and out["answer"] == question["target"]
    assert out["usage"]["user"]["calls"] == 1  # no dispatch call
    routing = out["routing"]
    assert routing["by"] == "embedding" and routing["verdict"] == "hit"
    assert routing["tool"] == "word_sorting" and routing["asked_model"] is False
    assert routing["distance"] <= routing["threshold"] and routing["margin"] == 1.0
    assert routing["embedder"] == "hash:256"


def test_a_far_request_is_a_clear_miss_with_no_model_call(store, make_context):
    make_sorting_tool(store, make_context)

    user = scripted([])
    out = run(store, make_context(scripted([]), user), task="What is the capital of France?")

    assert out["cache_hit"] is False and user.received == []
    assert out["routing"]["verdict"] == "none" and out["routing"]["tool"] is None
    assert "closest tools: word_sorting" in out["error"]


def test_hit_by_search_is_confirmed_by_the_user_model_with_the_llm_dispatcher(store, make_context):
    make_sorting_tool(store, make_context)

    question = EXAMPLES[40]
    user = scripted(['{"tool": "word_sorting"}', user_reply(question["input"])])
    out = run(store, make_context(scripted([]), user, dispatch="llm"), task=question["input"])

    assert out["cache_hit"] is True and out["answer"] == question["target"]
    assert "word_sorting" in user.prompts[0]  # the candidate was shown
    assert out["usage"]["user"]["calls"] == 2


def test_user_model_saying_none_with_examples_makes_a_new_tool(store, make_context):
    make_sorting_tool(store, make_context)

    question = EXAMPLES[41]
    maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS)])
    user = scripted(['{"tool": "none"}', user_reply(question["input"])])
    out = run(
        store,
        make_context(maker, user, dispatch="llm"),
        task=question["input"],
        examples=DEMOS_AND_VALIDATION,
    )

    assert out["cache_hit"] is False and out["answer"] == question["target"]
    assert len(maker.received) == 1
    made = [r for r in repo(store).records() if r.name == "sort_words"]
    # named after its function and the examples it was made from (never the name alone)
    assert len(made) == 2 and len({r.task_type for r in made}) == 2  # no overwrite
    assert any(r.task_type.startswith("sort_words-") for r in made)


def test_miss_without_examples_names_the_closest_tools(store, make_context):
    make_sorting_tool(store, make_context)

    user = scripted(['{"tool": "none"}'])
    out = run(
        store,
        make_context(scripted([]), user, dispatch="llm"),
        task="Sort these words by length: List: banana kiwi apple",
    )

    assert out["answer"] is None and out["cache_hit"] is False
    assert "no cached tool fits this request and no examples" in out["error"]
    assert "closest tools: word_sorting" in out["error"]


def test_miss_without_examples_on_an_empty_repository(store, make_context):
    user = scripted([])
    out = run(store, make_context(scripted([]), user), task="What is 2 + 2?")
    assert "no examples were given" in out["error"] and "repository is empty" in out["error"]
    assert user.received == []  # nothing to confirm, no model call


def test_reply_without_code_is_fed_back_and_retried(store, make_context):
    maker = scripted(
        ["I would sort the words alphabetically.", maker_reply(SORT_CODE, VALIDATION_QS)]
    )
    out = run(
        store,
        make_context(maker, scripted([user_reply(HELD_OUT["input"])])),
        task=HELD_OUT["input"],
        examples=DEMOS_AND_VALIDATION,
        task_type="word_sorting",
    )
    assert out["error"] is None and out["answer"] == HELD_OUT["target"]
    assert "contains no Python code block" in maker.prompts[1]


def test_reply_without_code_on_the_last_attempt_is_a_clear_error(store, make_context):
    maker = scripted(["Sorry, I cannot help with that."])
    out = run(
        store,
        make_context(maker, scripted([]), max_attempts=1),
        task=HELD_OUT["input"],
        examples=DEMOS_AND_VALIDATION,
    )
    assert "no Python code block" in out["error"] and "Nothing was stored" in out["error"]
    assert repo(store).records() == []


RAISING = '''\
def sort_words(words: list[str]) -> str:
    """Sort words."""
    raise ValueError("cannot sort " + words[0])
'''

LOOPING = '''\
def sort_words(words: list[str]) -> str:
    """Sort words."""
    while True:
        pass
'''


@pytest.mark.parametrize(
    ("code", "expected"), [(RAISING, "ValueError: cannot sort"), (LOOPING, "timeout")]
)
def test_tool_that_raises_or_loops_fails_verification(store, make_context, code, expected):
    maker = scripted([maker_reply(code, VALIDATION_QS)])
    out = run(
        store,
        make_context(maker, scripted([]), max_attempts=1, exec_timeout_s=1.0),
        task=HELD_OUT["input"],
        examples=DEMOS_AND_VALIDATION,
        task_type="word_sorting",
    )
    assert out["answer"] is None and expected in out["error"]
    assert repo(store).records() == []


TRAP = '''\
def sort_words(words: list[str]) -> str:
    """Sort words alphabetically and join them with single spaces."""
    if "trap" in words:
        while True:
            pass
    if "boom" in words:
        raise RuntimeError("boom")
    return " ".join(sorted(words))
'''


@pytest.mark.parametrize(
    ("word", "expected"), [("trap", "timeout"), ("boom", "RuntimeError: boom")]
)
def test_tool_that_loops_or_raises_at_use_time_gives_a_clear_error(
    store, make_context, word, expected
):
    maker = scripted([maker_reply(TRAP, VALIDATION_QS)])
    run(
        store,
        make_context(maker, scripted([user_reply(HELD_OUT["input"])])),
        task=HELD_OUT["input"],
        examples=DEMOS_AND_VALIDATION,
        task_type="word_sorting",
    )

    question = f"Sort the following words alphabetically: List: zebra {word} apple"
    out = run(
        store,
        make_context(scripted([]), scripted([user_reply(question)]), exec_timeout_s=1.0),
        task=question,
        task_type="word_sorting",
    )
    assert out["answer"] is None and out["cache_hit"] is True
    assert "tool word_sorting v1 failed" in out["error"] and expected in out["error"]
    assert repo(store).get("word_sorting") is not None  # the tool itself is kept


def test_user_reply_without_a_call_is_a_clear_error(store, make_context):
    make_sorting_tool(store, make_context)
    out = run(
        store,
        make_context(scripted([]), scripted(["The answer is apple zebra."])),
        task=HELD_OUT["input"],
        task_type="word_sorting",
    )
    assert out["answer"] is None
    assert "could not use tool word_sorting v1" in out["error"] and "sort_words()" in out["error"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "has no 'task'"),
        ({"task": 42}, "'task' must be a string"),
        ({"task": "x", "examples": "nope"}, "'examples' must be a list"),
        ({"task": "x", "examples": [{"input": "q"}]}, "example 0 must be an object"),
        ({"task": "x", "task_type": "bad name!"}, "'task_type' must be"),
        ({"task": "x", "make": True}, "'make' needs 'examples'"),
    ],
)
def test_malformed_requests_get_a_clear_error(store, make_context, inputs, message):
    maker, user = scripted([]), scripted([])
    out = run(store, make_context(maker, user), **inputs)
    assert out["error"].startswith("invalid request:") and message in out["error"]
    assert maker.received == [] and user.received == []


def test_dead_model_server_is_a_clear_error_and_stores_nothing(store):
    ctx = Context(
        maker_base_url="http://127.0.0.1:9/v1", maker_model="m", max_retries=0, request_timeout_s=5
    )
    out = build_graph(store=store).invoke(
        {"task": HELD_OUT["input"], "examples": DEMOS_AND_VALIDATION}, context=ctx
    )
    assert out["answer"] is None
    assert "the maker model 'm' at http://127.0.0.1:9/v1 failed" in out["error"]
    assert repo(store).records() == []


def test_missing_api_key_is_a_clear_error(store):
    out = build_graph(store=store).invoke(
        {"task": HELD_OUT["input"], "examples": DEMOS_AND_VALIDATION}, context=Context()
    )
    assert "no maker model is configured: set OPENAI_API_KEY" in out["error"]


def test_make_only_request_stores_a_tool_without_answering(store, make_context):
    user = scripted([])
    out = run(
        store,
        make_context(scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), user),
        examples=DEMOS_AND_VALIDATION,
        task_type="word_sorting",
    )
    assert out["error"] is None and out["answer"] is None
    assert out["tool"]["version"] == 1 and user.received == []


def test_remaking_a_tool_bumps_its_version(store, make_context):
    for version in (1, 2):
        out = run(
            store,
            make_context(scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), scripted([])),
            examples=DEMOS_AND_VALIDATION,
            task_type="word_sorting",
            make=True,
        )
        assert out["tool"]["version"] == version
    assert [r.version for r in repo(store).records()] == [2]


def test_runs_on_one_thread_start_fresh(store, make_context):
    app = build_graph(store=store, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t1"}}
    ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]),
        scripted([user_reply(HELD_OUT["input"]), user_reply(EXAMPLES[50]["input"])]),
    )
    first = app.invoke(
        {"task": HELD_OUT["input"], "examples": DEMOS_AND_VALIDATION, "task_type": "word_sorting"},
        config,
        context=ctx,
    )
    second = app.invoke(
        {"task": EXAMPLES[50]["input"], "task_type": "word_sorting", "examples": []},
        config,
        context=ctx,
    )
    assert first["usage"]["maker"]["calls"] == 1
    assert second["cache_hit"] is True and second["answer"] == EXAMPLES[50]["target"]
    assert "maker" not in second["usage"] and second["usage"]["user"]["calls"] == 1
    assert app.get_state(config).values["making"] is None  # no maker conversation left


def test_graph_embeds_as_a_node_of_a_parent_graph(store, make_context):
    class Parent(TypedDict, total=False):
        task: str
        examples: list[dict[str, str]]
        task_type: str
        answer: str | None
        error: str | None
        report: str

    def summarize(state: Parent) -> dict[str, Any]:
        return {"report": f"LATM said {state.get('answer')!r}"}

    parent = StateGraph(Parent)
    parent.add_node("latm", build_graph())
    parent.add_node("summarize", summarize)
    parent.add_edge(START, "latm")
    parent.add_edge("latm", "summarize")
    parent.add_edge("summarize", END)
    app = parent.compile(store=store)  # the child uses the parent's store

    ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), scripted([user_reply(HELD_OUT["input"])])
    )
    out = app.invoke(
        {"task": HELD_OUT["input"], "examples": DEMOS_AND_VALIDATION, "task_type": "word_sorting"},
        context=ctx,
    )
    assert out["answer"] == HELD_OUT["target"]
    assert out["report"] == f"LATM said {HELD_OUT['target']!r}"
    assert repo(store).get("word_sorting") is not None


def test_compiled_graph_has_the_papers_five_nodes_the_review_and_their_edges():
    drawn = graph.get_graph()
    assert set(drawn.nodes) == {
        "__start__",
        "dispatcher",
        "propose",
        "verify",
        "review",
        "wrap",
        "use",
        "__end__",
    }
    edges = {(e.source, e.target) for e in drawn.edges}
    assert edges == {
        ("__start__", "dispatcher"),
        ("dispatcher", "use"),
        ("dispatcher", "propose"),
        ("dispatcher", "__end__"),
        ("propose", "verify"),
        ("verify", "wrap"),
        ("verify", "propose"),
        ("verify", "__end__"),
        ("verify", "review"),
        ("review", "wrap"),
        ("review", "__end__"),
        ("wrap", "use"),
        ("wrap", "__end__"),
        ("use", "__end__"),
    }
    assert graph.name == "LATM"
    assert graph.checkpointer is None and graph.store is None


def test_conditional_edges_carry_labels_that_studio_draws():
    labels = {(e.source, e.target): e.data for e in graph.get_graph().edges if e.conditional}
    assert labels[("dispatcher", "use")] == "hit"
    assert labels[("dispatcher", "propose")] == "miss"
    assert labels[("dispatcher", "__end__")] == "stop"
    assert labels[("verify", "wrap")] == "pass"
    assert labels[("verify", "propose")] == "retry"
    assert labels[("verify", "__end__")] in ("exhausted", "stop")
    assert labels[("verify", "review")] == "approval"
    assert labels[("review", "wrap")] == "approved"
    assert labels[("review", "__end__")] == "stop"
    assert labels[("wrap", "use")] == "stored"
    assert labels[("wrap", "__end__")] in ("made", "stop")
    assert "hit" in graph.get_graph().draw_mermaid()


def test_progress_events_are_streamed(store, make_context):
    ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), scripted([user_reply(HELD_OUT["input"])])
    )
    events = [
        chunk
        for chunk in build_graph(store=store).stream(
            {"task": HELD_OUT["input"], "examples": DEMOS_AND_VALIDATION},
            context=ctx,
            stream_mode="custom",
        )
    ]
    kinds = [(e["node"], e["event"]) for e in events]
    assert kinds[:2] == [("dispatcher", "route"), ("dispatcher", "miss")]
    assert events[0]["verdict"] == "none" and events[0]["asked_model"] is False
    assert ("verify", "done") in kinds and ("wrap", "stored") in kinds
    assert kinds[-1] == ("use", "answer")
    cases = [e for e in events if e["event"] == "case"]
    assert len(cases) == 3 and all(c["passed"] for c in cases)


def test_stored_record_validates(store, make_context):
    run(
        store,
        make_context(scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), scripted([])),
        examples=DEMOS_AND_VALIDATION,
        task_type="word_sorting",
    )
    raw = store.get(("latm", "default", "tools"), "word_sorting").value
    assert ToolRecord.model_validate(raw).maker_model == "ScriptedChatModel"


def test_a_miss_with_no_candidates_says_whether_the_repository_is_empty(store, make_context):
    from latm.nodes.dispatcher import _no_tool
    from latm.repository import ToolRepository

    repo = ToolRepository(store)
    empty = _no_tool({"candidates": []}, {}, None, repo, [])  # type: ignore[arg-type]
    assert "closest tools: none (the repository is empty)" in empty["error"]
    make_sorting_tool(store, make_context)
    assert not repo.is_empty()
    found = _no_tool({"candidates": []}, {}, None, repo, [])  # type: ignore[arg-type]
    assert "closest tools: none matched the request" in found["error"]
    assert found["route"] == "stop"
