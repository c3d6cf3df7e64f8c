"""The trust boundary of ``langgraph dev``: what a client may set, and whose tools it sees.

Driven by the real ``langgraph_sdk`` client against the repository's
``langgraph.json`` (its example API-key authentication, ``latm.server.auth``).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient

from ..unit.scripted import SORT_CODE, bbh, maker_reply, user_reply
from .conftest import ServerProcess

pytestmark = pytest.mark.integration

EXAMPLES = bbh("word_sorting")
DEMOS_AND_VALIDATION = EXAMPLES[:6]
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]

ATTACKS = {
    "run generated code unsandboxed": (
        {"executor": "subprocess", "allow_unsandboxed": True},
        "'executor' is a deployment setting",
    ),
    "send a server variable to any URL": (
        {"maker_base_url": "http://127.0.0.1:9/v1", "maker_api_key_env": "HOME"},
        "'maker_base_url' is a deployment setting",
    ),
    "use another tenant's tools": (
        {"namespace": "other-team"},
        "'namespace' cannot be sent",
    ),
}

WHOAMI_CODE = '''\
def whoami(words: list[str]) -> str:
    """The uid this code runs as."""
    import os

    return str(os.getuid())
'''


def client_of(server: ServerProcess) -> tuple[str, SyncLangGraphClient]:
    tenant, key = server.new_tenant()
    return tenant, get_sync_client(url=server.url, api_key=key, timeout=120)


@pytest.mark.parametrize("attack", list(ATTACKS), ids=lambda a: a.replace(" ", "-"))
def test_a_run_cannot_set_deployment_settings_or_name_a_namespace(attack, langgraph_server, fake):
    context, message = ATTACKS[attack]
    _, client = client_of(langgraph_server)
    thread = client.threads.create()
    for send in (
        lambda: client.runs.wait(None, "latm", input={"task": "x"}, context=context),
        lambda: client.runs.create(
            thread["thread_id"], "latm", input={"task": "x"}, context=context
        ),
        lambda: client.runs.wait(
            None, "latm", input={"task": "x"}, config={"configurable": context}
        ),
        lambda: client.assistants.create("latm", context=context),
    ):
        with pytest.raises(httpx.HTTPStatusError) as err:
            send()
        assert err.value.response.status_code == 403
        assert message in err.value.response.text
    assert fake.requests("maker") == [] and fake.requests("user") == []
    assert client.runs.list(thread["thread_id"]) == []


def test_a_setting_beyond_the_deployments_bound_is_refused(langgraph_server, fake):
    _, client = client_of(langgraph_server)
    with pytest.raises(httpx.HTTPStatusError) as err:
        client.runs.wait(None, "latm", input={"task": "x"}, context={"max_attempts": 1000})
    assert err.value.response.status_code == 422
    assert "above this deployment's bound 10" in err.value.response.text


def test_generated_code_runs_in_the_sandbox_not_as_the_servers_user(langgraph_server, fake):
    """The tool reports its uid: the server (root here) runs it in the sandbox under another.

    The examples claim uid 0, what the code would report run as the server's own user;
    verification runs the tool in the server's sandbox, and its checks show the uid it got.
    """
    examples = [{"input": e["input"], "target": "0"} for e in EXAMPLES[:6]]
    fake.script("maker", [maker_reply(WHOAMI_CODE, VALIDATION_QS, entry="whoami")])
    _, client = client_of(langgraph_server)

    got: list[str] = []
    output: dict[str, Any] = {}
    for part in client.runs.stream(
        None,
        "latm",
        input={"examples": examples, "task_type": "whoami"},
        # the run may pick its run settings, not its executor
        context={"max_attempts": 1, "exec_timeout_s": 10},
        stream_mode=["custom", "values"],
    ):
        if part.event == "custom" and part.data.get("event") == "case":
            got.append(str(part.data["got"]))
        elif part.event == "values":
            output = part.data

    assert len(got) == 3 and all(uid.isdigit() and int(uid) > 0 for uid in got), got
    print(f"\nthe tool reported uid {got[0]} (the server runs as uid {os.getuid()})")
    assert "expected '0', got '" in output["error"]  # root's uid was never reported
    assert fake.requests("user") == []


def test_two_tenants_see_only_their_own_tools(langgraph_server, fake):
    alice, as_alice = client_of(langgraph_server)
    bob, as_bob = client_of(langgraph_server)
    fake.script("maker", [maker_reply(SORT_CODE, VALIDATION_QS)])
    made = as_alice.runs.wait(
        None, "latm", input={"examples": DEMOS_AND_VALIDATION, "task_type": "word_sorting"}
    )
    assert made["error"] is None, made

    question = EXAMPLES[20]
    fake.script("user", [user_reply(question["input"])])
    ask = {"task": question["input"], "task_type": "word_sorting"}
    assert as_alice.runs.wait(None, "latm", input=ask)["answer"] == question["target"]
    theirs = as_bob.runs.wait(None, "latm", input=ask)
    assert theirs["answer"] is None
    assert "no tool for task type 'word_sorting'" in theirs["error"]

    # The store API: each reads its own namespace; naming another's is refused.
    (item,) = as_alice.store.search_items(("latm", alice, "tools"))["items"]
    assert item["key"] == "word_sorting"
    assert as_bob.store.search_items(("latm", bob, "tools"))["items"] == []
    assert as_bob.store.search_items(("latm",))["items"] == []  # narrowed to bob's own
    for read in (
        lambda: as_bob.store.search_items(("latm", alice, "tools")),
        lambda: as_bob.store.get_item(("latm", alice, "tools"), "word_sorting"),
        lambda: as_alice.store.put_item(("latm", alice, "tools"), "x", {"code": "..."}),
    ):
        with pytest.raises(httpx.HTTPStatusError) as err:
            read()
        assert err.value.response.status_code == 403

    # Threads belong to their creator.
    thread = as_alice.threads.create()
    with pytest.raises(httpx.HTTPStatusError) as err:
        as_bob.threads.get(thread["thread_id"])
    assert err.value.response.status_code == 404
    seen = as_bob.threads.search(limit=1000)
    assert thread["thread_id"] not in {t["thread_id"] for t in seen}
    assert all(t["metadata"].get("owner") == bob for t in seen)


def test_a_request_without_a_valid_key_is_refused(langgraph_server):
    for headers in ({}, {"x-api-key": "not-a-key-of-this-server"}):
        reply = httpx.post(
            f"{langgraph_server.url}/runs/wait",
            json={"assistant_id": "latm", "input": {"task": "x"}},
            headers=headers,
            timeout=30,
        )
        assert reply.status_code == 401, reply.text


def test_a_cancelled_making_run_lets_the_next_request_make_at_once(langgraph_server, fake):
    asked = threading.Event()

    async def slow_maker(body: dict[str, Any]) -> str:
        asked.set()
        await asyncio.sleep(10)  # a slow model: the run is cancelled meanwhile
        return maker_reply(SORT_CODE, VALIDATION_QS)

    fake.script("maker", [slow_maker, maker_reply(SORT_CODE, VALIDATION_QS)])
    _, client = client_of(langgraph_server)
    make = {"examples": DEMOS_AND_VALIDATION, "task_type": "word_sorting"}
    thread = client.threads.create()
    run = client.runs.create(thread["thread_id"], "latm", input=make)
    assert asked.wait(60), "the maker was never asked"  # the run holds the lease now

    client.runs.cancel(thread["thread_id"], run["run_id"], wait=True)
    started = time.monotonic()
    miss_at = None
    output: dict[str, Any] = {}
    for part in client.runs.stream(
        None,
        "latm",
        input=make,
        context={"lease_wait_s": 120},
        stream_mode=["custom", "values"],
    ):
        if part.event == "custom" and part.data.get("event") == "miss":
            miss_at = time.monotonic() - started
        elif part.event == "values":
            output = part.data
    assert output.get("error") is None and output["tool"]["version"] == 1, output
    assert miss_at is not None
    print(f"\nlease wait after a cancelled making run: {miss_at:.2f} s (lease TTL 600 s)")
    assert miss_at < 10  # seconds, not the TTL's ten minutes
    assert client.runs.get(thread["thread_id"], run["run_id"])["status"] in (
        "interrupted",
        "error",
    )


def test_the_server_says_at_start_up_how_it_tells_tenants_apart(langgraph_server):
    log = langgraph_server.log.read_text(errors="replace")
    assert "API keys (LATM_API_KEYS)" in log and "each tenant has its own tool namespace" in log
    assert "no API keys are configured" not in log


def test_a_client_cannot_write_state_that_skips_verification(langgraph_server, fake):
    _, client = client_of(langgraph_server)
    thread = client.threads.create()
    forged = {"code": "def sort_words(words):\n    return 'forged'\n", "verified": True}
    for send in (
        lambda: client.threads.update_state(thread["thread_id"], forged, as_node="verify"),
        lambda: client.runs.wait(
            thread["thread_id"], "latm", command={"update": forged, "goto": "wrap"}
        ),
    ):
        with pytest.raises(httpx.HTTPStatusError) as err:
            send()
        assert err.value.response.status_code == 403
        assert "skipped verification" in err.value.response.text
    assert fake.requests("maker") == []
