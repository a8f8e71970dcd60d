"""Import keys and batches: stable keys, exactly the fields given, batches that partition the rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from importer.delivery.planner import plan
from importer.kantata.keys import KEY_PREFIX, SERVICE_NAME, ImportKey, Item, build_items, reference_issues
from importer.schedule.loader import load_schedule
from importer.schedule.schema import validate_rows
from tests.conftest import MakeSchedule


def _items(path: Path) -> list[Item]:
    items, issues = build_items(validate_rows(load_schedule(path)).rows)
    assert issues == []
    return items


def test_body_holds_only_the_fields_given_with_exact_types(make_schedule: MakeSchedule) -> None:
    import datetime as dt

    (item,) = _items(make_schedule([["A", -1500, 1001, dt.date(2026, 3, 31), None, None]]))
    assert item.body == {"title": "A", "amount_in_cents": -1500, "workspace_id": 1001, "date_to_invoice": "2026-03-31",
                         "external_reference": {"service_name": SERVICE_NAME, "service_model": "billing_schedule_row",
                                                "service_model_ref": item.key.ref}}  # fmt: skip
    assert type(item.body["amount_in_cents"]) is int and item.key.ref.startswith(KEY_PREFIX)


def test_derived_key_ignores_column_order_and_extra_columns_but_not_content(make_schedule: MakeSchedule) -> None:
    base = _items(make_schedule([["A", 100, 1001]], headers=["title", "amount_in_cents", "workspace_id"], name="a"))
    moved = _items(make_schedule([[1001, "note", "A", 100]], headers=["workspace_id", "Notes", "title",
                                                                       "amount_in_cents"], name="b"))  # fmt: skip
    edited = _items(make_schedule([["A", 101, 1001]], headers=["title", "amount_in_cents", "workspace_id"], name="c"))
    assert base[0].key == moved[0].key != edited[0].key


def test_identical_rows_get_distinct_keys_and_keep_them_when_moved(make_schedule: MakeSchedule) -> None:
    first = _items(make_schedule([["A", 1, 1001], ["A", 1, 1001], ["B", 2, 1001]],
                                 headers=["title", "amount_in_cents", "workspace_id"], name="a"))  # fmt: skip
    later = _items(make_schedule([["B", 2, 1001], ["A", 1, 1001], ["A", 1, 1001]],
                                 headers=["title", "amount_in_cents", "workspace_id"], name="b"))  # fmt: skip
    assert len({i.key for i in first}) == 3
    assert {i.key for i in first} == {i.key for i in later}


def test_a_user_reference_is_the_key_and_may_not_repeat(make_schedule: MakeSchedule) -> None:
    headers = ["title", "amount_in_cents", "workspace_id", "External service", "External type", "External ID"]
    path = make_schedule([["A", 1, 1001, "NetSuite", "line", "L-1"], ["B", 2, 1001, "NetSuite", "line", "L-1"]],
                         headers=headers)  # fmt: skip
    items, issues = build_items(validate_rows(load_schedule(path)).rows)
    assert [i.key for i in items] == [ImportKey("NetSuite", "line", "L-1")]
    assert [(i.row, i.code) for i in issues] == [(3, "duplicate-external-reference")]
    assert "row 2" in issues[0].message


def test_items_built_a_chunk_of_rows_at_a_time_are_those_of_the_whole_frame(
    make_schedule: MakeSchedule, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of 2 rows: fields only some chunks have (a date, a task, a user reference), an identical row in
    another chunk (its occurrence counts on), and a user reference reused across chunks (still an issue)."""
    import datetime as dt

    import importer.kantata.keys

    headers = ["title", "amount_in_cents", "workspace_id", "date_to_invoice", "story_id", "billing_type",
               "External service", "External type", "External ID"]  # fmt: skip
    path = make_schedule([["A", 1, 1001, None, None, None, None, None, None],
                          ["A", 1, 1001, None, None, None, None, None, None],
                          ["B", 2, 1002, dt.date(2026, 3, 31), 7, "upon_completion", None, None, None],
                          ["A", 1, 1001, None, None, None, "NetSuite", "line", "L-1"],
                          ["A", 1, 1001, None, None, None, None, None, None],
                          ["C", 3, 1001, None, None, "fixed_date", "NetSuite", "line", "L-1"],
                          ["D", 4, 1001, None, None, None, None, None, None]], headers=headers)  # fmt: skip
    rows = validate_rows(load_schedule(path)).rows
    whole = build_items(rows)
    monkeypatch.setattr(importer.kantata.keys, "CHUNK", 2)
    chunked = build_items(rows)
    assert chunked == whole and len(whole[0]) == 6 and [i.row for i in whole[1]] == [7]
    assert len({i.key for i in whole[0]}) == 6


def test_the_dry_run_check_finds_the_same_reused_references_as_build_items(make_schedule: MakeSchedule) -> None:
    headers = ["title", "amount_in_cents", "workspace_id", "External service", "External type", "External ID"]
    path = make_schedule([["A", 1, 1001, "NetSuite", "line", "L-1"], ["B", 2, 1001, None, None, None],
                          ["C", 3, 1001, "NetSuite", "line", "L-2"], ["D", 4, 1001, "NetSuite", "line", "L-1"],
                          ["E", 5, 1001, "NetSuite", "other", "L-1"], ["F", 6, 1001, "NetSuite", "line", "L-1"]],
                         headers=headers)  # fmt: skip
    rows = validate_rows(load_schedule(path)).rows
    _, from_items = build_items(rows)
    assert [i.row for i in from_items] == [5, 7]
    assert reference_issues(rows) == from_items


@given(st.integers(min_value=0, max_value=450), st.integers(min_value=1, max_value=100), st.data())
def test_batches_partition_the_rows_not_in_kantata(n: int, size: int, data: st.DataObject) -> None:
    items = [Item(r, ImportKey("s", "m", str(r)), {}) for r in range(2, n + 2)]
    found = data.draw(st.lists(st.sampled_from(items), unique_by=lambda i: i.row)) if items else []
    existing = {i.key: f"id{i.row}" for i in found}
    the_plan = plan(items, existing, batch_size=size)
    batches = list(the_plan.batches())
    assert [i for b in batches for i in b] == [i for i in items if i.key not in existing]
    assert all(1 <= len(b) <= size for b in batches)
    assert the_plan.existing == {i.row: f"id{i.row}" for i in items if i.key in existing}


def _documented_key(fields: list[object], occurrence: int) -> str:
    """The derived key exactly as importer/kantata/keys.py's docstring states it, computed here independently."""
    import hashlib
    import json

    content = json.dumps(fields, ensure_ascii=False)
    return KEY_PREFIX + hashlib.sha256(f"{content}#{occurrence}".encode()).hexdigest()[:24]


def test_derived_keys_follow_the_documented_formula_to_the_character(make_schedule: MakeSchedule) -> None:
    """A re-run finds what an earlier version created only if this formula never changes."""
    import datetime as dt

    rows = [
        ['Café "Ünïcode" \\ tab\there ✓ 🚀', -1500, 1001, dt.date(2026, 3, 31), None, "fixed_date"],
        ["Launch", 250000, 1001, None, 5003, "upon_completion"],
        ["Launch", 250000, 1001, None, 5003, "upon_completion"],
        ["</x> & ' \u2028 end", "9007199254740993", 1002, dt.date(2026, 12, 1), None, None],
    ]
    items = _items(make_schedule(rows))
    expected = [
        _documented_key([1001, 'Café "Ünïcode" \\ tab\there ✓ 🚀', -1500, "2026-03-31", "fixed_date", None], 1),
        _documented_key([1001, "Launch", 250000, None, "upon_completion", 5003], 1),
        _documented_key([1001, "Launch", 250000, None, "upon_completion", 5003], 2),
        _documented_key([1002, "</x> & ' \u2028 end", 9007199254740993, "2026-12-01", None, None], 1),
    ]
    assert [i.key.ref for i in items] == expected


@given(st.lists(st.one_of(st.none(), st.text(), st.integers(), st.booleans(),
                          st.floats(allow_nan=False, allow_infinity=False)), max_size=20))  # fmt: skip
def test_column_wise_key_text_equals_the_encoder_value_by_value(values: list[object]) -> None:
    import json

    from importer.kantata.keys import _json_texts

    assert _json_texts(values) == [json.dumps(v, ensure_ascii=False) for v in values]
