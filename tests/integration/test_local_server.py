"""The real local server: llama.cpp serving Qwen2.5-Coder 1.5B (maker) and 0.5B (user).

Started through ``latm.local`` (and stopped again if this session started it).
Skipped, with the reason, only when ``latm local install`` has not been run
(and failed then instead if ``LATM_LOCAL_REQUIRED=1``, as CI sets it).
"""

from __future__ import annotations

import ast
import re
import time
from collections.abc import Iterator

import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from latm.local import LocalEndpoints, LocalPaths
from latm.local import server as srv

from .local_server import local_endpoints

pytestmark = pytest.mark.integration

WORDS = ["pear", "apple", "fig", "banana"]


@pytest.fixture(scope="module")
def endpoints() -> Iterator[LocalEndpoints]:
    yield from local_endpoints()


def chat(base_url: str, model: str, max_tokens: int = 256) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=base_url,
        model=model,
        api_key="local",  # type: ignore[arg-type]
        temperature=0,
        max_tokens=max_tokens,  # type: ignore[call-arg]
        timeout=120,
    )


def test_server_is_ready_on_loopback_with_both_models(endpoints: LocalEndpoints) -> None:
    paths = LocalPaths.from_env()
    st = srv.status(paths)
    assert st.running and st.ready, st.detail
    assert endpoints.maker_base_url.startswith("http://127.0.0.1:")
    assert endpoints.maker_base_url == endpoints.user_base_url
    assert st.models[endpoints.maker_model] == "loaded"
    assert st.models[endpoints.user_model] == "loaded"


def test_user_plain_chat_answer_parses(endpoints: LocalEndpoints) -> None:
    llm = chat(endpoints.user_base_url, endpoints.user_model, 64)
    reply = llm.invoke(
        "Sort these words alphabetically: " + " ".join(WORDS) + ". "
        "Answer with the sorted words only, separated by single spaces."
    )
    assert isinstance(reply.content, str) and reply.content.strip()
    found = re.findall(r"[a-z]+", reply.content.lower())
    assert set(WORDS) <= set(found), reply.content


def test_maker_answer_contains_parsable_python(endpoints: LocalEndpoints) -> None:
    llm = chat(endpoints.maker_base_url, endpoints.maker_model, 400)
    reply = llm.invoke(
        "Write a Python function `sort_words(text: str) -> str` that returns the "
        "space-separated words of `text` in alphabetical order. Reply with one "
        "```python code block only."
    )
    content = str(reply.content)
    blocks = re.findall(r"```(?:python)?\s*\n(.*?)```", content, re.S)
    code = blocks[0] if blocks else content
    tree = ast.parse(code)
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "sort_words" in names, content


def test_user_emits_a_python_call_that_parses(endpoints: LocalEndpoints) -> None:
    llm = chat(endpoints.user_base_url, endpoints.user_model, 64)
    system = (
        "You answer questions by calling the Python function "
        "`sort_words(text: str) -> str`, which returns the words of `text` in "
        "alphabetical order. Reply with exactly one Python call of sort_words and nothing else."
    )
    reply = llm.invoke(
        [
            ("system", system),
            ("human", "Sort the following words alphabetically: List: kiwi lemon date"),
            ("ai", 'sort_words("kiwi lemon date")'),
            ("human", "Sort the following words alphabetically: List: pear apple fig"),
        ]
    )
    content = str(reply.content).strip().strip("`").removeprefix("python").strip()
    call = ast.parse(content.splitlines()[0], mode="eval").body
    assert isinstance(call, ast.Call), content
    assert isinstance(call.func, ast.Name) and call.func.id == "sort_words", content
    assert all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in call.args)


class SortedWords(BaseModel):
    """The answer to a word-sorting question."""

    words: list[str] = Field(description="the words in alphabetical order")


@pytest.mark.parametrize("role", ["user", "maker"])
def test_structured_output_json_schema(endpoints: LocalEndpoints, role: str) -> None:
    base_url = endpoints.user_base_url if role == "user" else endpoints.maker_base_url
    model = endpoints.user_model if role == "user" else endpoints.maker_model
    llm = chat(base_url, model, 128).with_structured_output(SortedWords, method="json_schema")
    t0 = time.monotonic()
    result = llm.invoke("Sort these words alphabetically: " + " ".join(WORDS))
    elapsed = time.monotonic() - t0
    assert isinstance(result, SortedWords)
    assert all(isinstance(w, str) for w in result.words)
    assert {w.strip().lower() for w in result.words} == set(WORDS), result
    assert elapsed < 120
