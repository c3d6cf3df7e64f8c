from __future__ import annotations

from langgraph.store.memory import InMemoryStore

from latm.backends import open_local_store
from latm.repository import ToolRecord, ToolRepository, UsageDemo, lexical_rank


def record(task_type: str, description: str, question: str, version: int = 1) -> ToolRecord:
    return ToolRecord(
        name=task_type,
        task_type=task_type,
        description=description,
        signature=f"def {task_type}(x)",
        docstring=description,
        code=f"def {task_type}(x): ...",
        demos=[UsageDemo(question=question, call=f"{task_type}(1)", answer="1")],
        maker_model="m",
        verification=[],
        created_at="2026-01-01T00:00:00+00:00",
        version=version,
    )


def test_lexical_rank_prefers_shared_rare_words():
    docs = {
        "sort": "sort the following words alphabetically list",
        "dyck": "complete the rest of the sequence parentheses closed properly",
        "crt": "divide them equally among penguins left how many",
    }
    ranked = lexical_rank("Sort the following words alphabetically: List: pear apple", docs)
    assert ranked[0][0] == "sort" and all(key != "crt" for key, _ in ranked)
    assert lexical_rank("zzz qqq", docs) == []


def test_put_get_list_search_delete_and_corrupt_records_are_skipped():
    repo = ToolRepository(InMemoryStore(), "tenant")
    repo.put(
        record(
            "word_sorting",
            "Sort words alphabetically.",
            "Sort the following words alphabetically: List: b a",
        )
    )
    repo.put(record("dyck", "Close a Dyck sequence.", "Complete the rest of the sequence: ( ["))
    repo.store.put(repo.namespace, "broken", {"name": 3})

    assert [r.task_type for r in repo.records()] == ["dyck", "word_sorting"]
    assert repo.get("broken") is None
    found = repo.search("Sort the following words alphabetically: List: x y", limit=3)
    assert found[0][0].task_type == "word_sorting"
    assert repo.next_version("word_sorting") == 2 and repo.next_version("new") == 1
    assert repo.delete("dyck") and not repo.delete("dyck")
    # Namespaces keep tenants apart.
    assert ToolRepository(repo.store, "other").records() == []


def test_local_sqlite_store_persists_across_opens(tmp_path):
    path = tmp_path / "repo" / "tools.sqlite"
    ToolRepository(open_local_store(path), "default").put(record("t", "Does t.", "q"))
    import latm.backends as module

    module._BACKENDS.clear()  # a new process would open the file afresh
    assert ToolRepository(open_local_store(path), "default").get("t") is not None


def test_cache_key_changes_with_code_and_version():
    a = record("t", "d", "q")
    b = record("t", "d", "q", version=2)
    assert a.cache_key != b.cache_key and a.cache_key.startswith("t:1:")
