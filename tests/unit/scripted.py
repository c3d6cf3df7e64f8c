"""Scripted chat models and example data for unit tests (no network)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from pydantic import Field

DATA = Path(__file__).resolve().parents[2] / "latm" / "data" / "bbh"


class ScriptedChatModel(GenericFakeChatModel):
    """Replies with the scripted messages in order and records every prompt."""

    received: list[list[BaseMessage]] = Field(default_factory=list)
    lock: Any = Field(default_factory=threading.Lock, exclude=True)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:  # type: ignore[override]
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        with self.lock:  # best-of-N calls the maker from parallel branches
            self.received.append(list(messages))
            try:
                return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
            except StopIteration:
                msg = "the scripted model was called more often than scripted"
                raise AssertionError(msg) from None

    @property
    def prompts(self) -> list[str]:
        """The text of the last message of each call."""
        return [str(call[-1].content) for call in self.received]


def scripted(replies: Iterable[str]) -> ScriptedChatModel:
    """A scripted model whose replies report 100 input and 20 output tokens each."""
    return ScriptedChatModel(
        messages=iter(
            AIMessage(
                content=r,
                usage_metadata={"input_tokens": 100, "output_tokens": 20, "total_tokens": 120},
            )
            for r in replies
        )
    )


def bbh(task: str) -> list[dict[str, str]]:
    """The examples of a shipped BIG-Bench Hard task."""
    return list(json.loads((DATA / f"{task}.json").read_text())["examples"])


def words_of(question: str) -> list[str]:
    """The word list of a word_sorting question."""
    return question.split("List:", 1)[1].split()


SORT_CODE = '''\
def sort_words(words: list[str]) -> str:
    """Sort words alphabetically and join them with single spaces."""
    return " ".join(sorted(words))
'''

BUGGY_SORT_CODE = '''\
def sort_words(words: list[str]) -> str:
    """Sort words alphabetically."""
    return " ".join(sorted(words, reverse=True))
'''


def maker_reply(code: str, questions: Sequence[str], entry: str = "sort_words") -> str:
    """A maker reply with the tool and one call per validation question."""
    calls = "\n".join(f"    {entry}({words_of(q)!r})," for q in questions)
    return f"Here is the tool.\n\n```python\n{code}\nCALLS = [\n{calls}\n]\n```\n"


def user_reply(question: str, entry: str = "sort_words") -> str:
    """A user reply calling the tool for a word_sorting question."""
    return f"```python\n{entry}({words_of(question)!r})\n```"
