"""Golden tests: SearchQuery plans → the exact MongoDB filters and pipeline stages (compile is pure)."""

from __future__ import annotations

import pytest

from fhir_server.errors import InvalidSearch
from fhir_server.search.ast import (
    Chain,
    CompositeValue,
    Criterion,
    Has,
    MissingValue,
    ParamRef,
    RangeValue,
    ReferenceValue,
    SearchQuery,
    SortKey,
    StringValue,
    TokenValue,
    UriValue,
)
from fhir_server.search.index import IndexEntries
from fhir_server.search.match import NUM_MAX, STRING_MAX
from fhir_server.storage.mongo import compile as mc
from fhir_server.storage.mongo.documents import embed_index, unembed_index
from fhir_server.storage.mongo.history import history_find, history_pipeline
from fhir_server.storage.protocol import HistoryRequest

IDENT = ParamRef("identifier", "token", (11,))
NAME = ParamRef("name", "string", (12,))
SUBJECT = ParamRef("subject", "reference", (13, 23))
BIRTH = ParamRef("birthdate", "date", (14,))
PROB = ParamRef("probability", "number", (15,))
VALUE_Q = ParamRef("value-quantity", "quantity", (16,))
URL = ParamRef("url", "uri", (17,))
CODE_VQ = ParamRef("code-value-quantity", "composite", (18,))
ID = ParamRef("_id", "special", ())
LAST = ParamRef("_lastUpdated", "special", ())


def crit(param: ParamRef, *values: object, modifier: str | None = None) -> Criterion:
    return Criterion(param, modifier, tuple(values))  # type: ignore[arg-type]


def test_token_system_and_code_share_one_element() -> None:
    got = mc.criterion_cond(crit(IDENT, TokenValue("urn:mrn", "42")))
    assert got == {"idx.token": {"$elemMatch": {"p": 11, "c": "42", "s": "urn:mrn"}}}


def test_token_or_of_values_and_not() -> None:
    got = mc.criterion_cond(crit(IDENT, TokenValue(None, "a"), TokenValue("", "b"), modifier="not"))
    assert got == {
        "$nor": [
            {
                "$or": [
                    {"idx.token": {"$elemMatch": {"p": 11, "c": "a"}}},
                    {"idx.token": {"$elemMatch": {"p": 11, "c": "b", "s": ""}}},
                ]
            }
        ]
    }


def test_token_text_is_an_escaped_substring_regex() -> None:
    got = mc.criterion_cond(crit(IDENT, TokenValue(None, None, "a.b"), modifier="text"))
    assert got == {"idx.token": {"$elemMatch": {"p": 11, "x": {"$regex": r"a\.b"}}}}


def test_string_prefix_exact_contains() -> None:
    assert mc.criterion_cond(crit(NAME, StringValue("zh"))) == {
        "idx.string": {"$elemMatch": {"p": 12, "v": {"$gte": "zh", "$lt": "zh" + STRING_MAX}}}
    }
    assert mc.criterion_cond(crit(NAME, StringValue("Zhang"), modifier="exact")) == {
        "idx.string": {"$elemMatch": {"p": 12, "r": "Zhang"}}
    }
    assert mc.criterion_cond(crit(NAME, StringValue("an"), modifier="contains")) == {
        "idx.string": {"$elemMatch": {"p": 12, "v": {"$regex": "an"}}}
    }


def test_reference_by_id_type_and_url_with_several_pids() -> None:
    got = mc.criterion_cond(
        crit(SUBJECT, ReferenceValue("Patient", "p1"), ReferenceValue(None, None, "http://x/y"))
    )
    assert got == {
        "$or": [
            {"idx.reference": {"$elemMatch": {"p": {"$in": [13, 23]}, "i": "p1", "t": "Patient", "u": ""}}},
            {"idx.reference": {"$elemMatch": {"p": {"$in": [13, 23]}, "u": "http://x/y"}}},
        ]
    }


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("eq", {"l": {"$gte": 100}, "h": {"$lte": 200}}),
        ("ne", {"$nor": [{"l": {"$gte": 100}, "h": {"$lte": 200}}]}),
        ("gt", {"h": {"$gt": 200}}),
        ("lt", {"l": {"$lt": 100}}),
        ("ge", {"$or": [{"h": {"$gt": 200}}, {"l": {"$gte": 100}, "h": {"$lte": 200}}]}),
        ("le", {"$or": [{"l": {"$lt": 100}}, {"l": {"$gte": 100}, "h": {"$lte": 200}}]}),
        ("sa", {"l": {"$gte": 200}}),
        ("eb", {"h": {"$lte": 100}}),
        ("ap", {"l": {"$lt": 86_400_000_200}, "h": {"$gt": -86_399_999_900}}),
    ],
)
def test_date_prefixes(prefix: str, expected: dict) -> None:
    got = mc.criterion_cond(crit(BIRTH, RangeValue(prefix, 100, 200)))
    assert got == {"idx.date": {"$elemMatch": {"p": 14, **expected}}}


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("eq", {"l": {"$gte": 4.95}, "h": {"$lte": 5.05}}),
        ("gt", {"h": {"$gt": 5.0}}),
        ("ge", {"h": {"$gte": 5.0}}),
        ("lt", {"l": {"$lt": 5.0}}),
        ("le", {"l": {"$lte": 5.0}}),
        ("sa", {"l": {"$gt": 5.0}}),
        ("eb", {"h": {"$lt": 5.0}}),
        ("ap", {"l": {"$lte": 5.5}, "h": {"$gte": 4.5}}),
    ],
)
def test_number_prefixes_compare_the_written_value(prefix: str, expected: dict) -> None:
    got = mc.criterion_cond(crit(PROB, RangeValue(prefix, 4.95, 5.05, 5.0)))
    assert got == {"idx.number": {"$elemMatch": {"p": 15, **expected}}}


def test_quantity_with_system_and_code() -> None:
    got = mc.criterion_cond(
        crit(VALUE_Q, RangeValue("gt", 4.95, 5.05, 5.0, "http://unitsofmeasure.org", "mg"))
    )
    assert got == {
        "idx.quantity": {
            "$elemMatch": {"p": 16, "s": "http://unitsofmeasure.org", "c": "mg", "h": {"$gt": 5.0}}
        }
    }


def test_uri_exact_below_above() -> None:
    assert mc.criterion_cond(crit(URL, UriValue("http://a/b"))) == {
        "idx.uri": {"$elemMatch": {"p": 17, "v": "http://a/b"}}
    }
    assert mc.criterion_cond(crit(URL, UriValue("ab"), modifier="above")) == {
        "idx.uri": {"$elemMatch": {"p": 17, "v": {"$in": ["", "a", "ab"]}}}
    }


def test_composite_token_and_quantity_range() -> None:
    value = CompositeValue(
        TokenValue(None, "8480-6"), None, RangeValue("lt", 0, 0, 120.0, None, "mm[Hg]"), "quantity"
    )
    got = mc.criterion_cond(crit(CODE_VQ, value))
    assert got == {
        "idx.composite": {
            "$elemMatch": {"p": 18, "c": "8480-6", "k": {"$regex": r"\|mm\[Hg\]$"}, "l": {"$lt": 120.0}}
        }
    }


def test_missing_reads_the_pid_list() -> None:
    assert mc.criterion_cond(crit(BIRTH, MissingValue(True), modifier="missing")) == {
        "idx.pids": {"$nin": [14]}
    }
    assert mc.criterion_cond(crit(BIRTH, MissingValue(False), modifier="missing")) == {
        "idx.pids": {"$in": [14]}
    }


def test_id_and_last_updated() -> None:
    assert mc.criterion_cond(crit(ID, TokenValue(None, "a"), TokenValue(None, "b"))) == {
        "id": {"$in": ["a", "b"]}
    }
    assert mc.criterion_cond(crit(ID, TokenValue(None, "a"), modifier="not")) == {"id": {"$nin": ["a"]}}
    # a point [lu, lu + 1): `hi > 200` becomes `lu > 199`, eq merges both bounds on one field
    assert mc.criterion_cond(crit(LAST, RangeValue("gt", 100, 200))) == {"lu": {"$gt": 199}}
    assert mc.criterion_cond(crit(LAST, RangeValue("eq", 100, 200))) == {"lu": {"$gte": 100, "$lte": 199}}


def test_chain_and_has_use_resolved_keys() -> None:
    chain = Chain(SUBJECT, ("Patient", "Group"), crit(NAME, StringValue("zh")))
    has = Has("Observation", SUBJECT, crit(IDENT, TokenValue(None, "x")))
    assert mc.unresolved([chain, has], {}) == [chain, has]
    sub, projection = mc.subquery(chain, {})
    assert sub["type"] == {"$in": ["Patient", "Group"]} and projection == {"type": 1, "id": 1}
    keys = mc.resolved_keys(chain, [{"type": "Patient", "id": "p2"}, {"type": "Patient", "id": "p1"}])
    resolved = {chain: keys, has: frozenset({("Patient", "p9")})}
    assert mc.filter_cond(chain, resolved) == {
        "idx.reference": {
            "$elemMatch": {"p": {"$in": [13, 23]}, "u": "", "t": "Patient", "i": {"$in": ["p1", "p2"]}}
        }
    }
    assert mc.filter_cond(has, resolved) == {"type": "Patient", "id": "p9"}
    assert mc.filter_cond(chain, {chain: frozenset()}) == mc.NOTHING
    sources = [
        {
            "idx": {
                "reference": [
                    {"p": 13, "t": "Patient", "i": "p3", "u": ""},
                    {"p": 13, "t": "Patient", "i": "p4", "u": "http://other/Patient/p4"},
                ]
            }
        }
    ]
    assert mc.resolved_keys(has, sources) == frozenset({("Patient", "p3")})


def test_nested_chain_resolves_inner_first() -> None:
    inner = Chain(SUBJECT, ("Patient",), crit(NAME, StringValue("a")))
    outer = Has("Observation", SUBJECT, inner)
    assert mc.unresolved([outer], {}) == [inner, outer]


def test_page_pipeline_with_sort_and_cursor() -> None:
    query = SearchQuery(
        "Patient",
        ("Patient",),
        (crit(NAME, StringValue("zh")),),
        (SortKey(BIRTH, descending=True), SortKey(ID)),
        count=10,
    )
    stages = mc.page_pipeline(query, {}, after=[5, "b", "Patient", "b"], backwards=False, limit=11)
    assert stages[0] == {
        "$match": {
            "type": "Patient",
            "deleted": False,
            "idx.string": {"$elemMatch": {"p": 12, "v": {"$gte": "zh", "$lt": "zh" + STRING_MAX}}},
        }
    }
    assert stages[1:5] == [
        {"$addFields": {"_k1": "$id"}},
        {
            "$addFields": {
                "_k0": {
                    "$map": {
                        "input": {
                            "$filter": {
                                "input": {"$ifNull": ["$idx.date", []]},
                                "as": "e",
                                "cond": {"$in": ["$$e.p", [14]]},
                            }
                        },
                        "as": "e",
                        "in": "$$e.h",
                    }
                }
            }
        },
        {"$addFields": {"_k0": {"$max": "$_k0"}}},
        {"$addFields": {"_k0": {"$ifNull": ["$_k0", -NUM_MAX]}}},
    ]
    assert stages[5] == {
        "$match": {
            "$or": [
                {"_k0": {"$lt": 5}},
                {"_k0": 5, "_k1": {"$gt": "b"}},
                {"_k0": 5, "_k1": "b", "type": {"$gt": "Patient"}},
                {"_k0": 5, "_k1": "b", "type": "Patient", "id": {"$gt": "b"}},
            ]
        }
    }
    assert stages[6:] == [
        {"$sort": {"_k0": -1, "_k1": 1, "type": 1, "id": 1}},
        {"$limit": 11},
        {"$project": {"idx": 0}},
    ]
    backwards = mc.page_pipeline(query, {}, after=[5, "b", "Patient", "b"], backwards=True, limit=3)
    assert backwards[-3]["$sort"] == {"_k0": 1, "_k1": -1, "type": -1, "id": -1}
    assert backwards[5]["$match"]["$or"][0] == {"_k0": {"$gt": 5}}


def test_cursor_round_trip_and_rejection() -> None:
    query = SearchQuery("Patient", ("Patient",))
    token = mc.encode_cursor("n", ["Patient", "a"])
    assert mc.decode_cursor(token, query) == ("n", ["Patient", "a"])
    with pytest.raises(InvalidSearch):
        mc.decode_cursor("not-a-cursor", query)
    with pytest.raises(InvalidSearch):
        mc.decode_cursor(mc.encode_cursor("n", [1, "Patient", "a"]), query)


def test_history_pipelines() -> None:
    assert history_pipeline(HistoryRequest("Patient", "a", count=2, before_seq=9), count_only=False) == [
        {"$match": {"type": "Patient", "id": "a"}},
        {"$match": {"seq": {"$lt": 9}}},
        {"$sort": {"seq": -1}},
        {"$limit": 2},
    ]
    at = history_pipeline(HistoryRequest(at="1970-01-01T00:00:01Z"), count_only=True)
    assert at == [
        {"$match": {"lu": {"$lte": 1_000_000}}},
        {"$sort": {"seq": -1}},
        {"$group": {"_id": {"t": "$type", "i": "$id"}, "doc": {"$first": "$$ROOT"}}},
        {"$replaceRoot": {"newRoot": "$doc"}},
        {"$count": "n"},
    ]


def test_embedded_index_round_trip() -> None:
    entries = IndexEntries(
        "Observation",
        strings=[(1, "zhang", "Zhang")],
        tokens=[(2, "http://loinc.org", "8867-4", "heart rate")],
        references=[(3, "Patient", "p1", "")],
        dates=[(4, 0, 10)],
        quantities=[(5, "http://unitsofmeasure.org", "/min", 60.0, 60.0)],
    )
    idx = embed_index(entries)
    assert idx["token"] == [{"p": 2, "s": "http://loinc.org", "c": "8867-4", "x": "heart rate"}]
    assert idx["pids"] == [1, 2, 3, 4, 5]
    assert "number" not in idx
    back = unembed_index("Observation", idx)
    assert (back.strings, back.tokens, back.references, back.dates, back.quantities) == (
        entries.strings,
        entries.tokens,
        entries.references,
        entries.dates,
        entries.quantities,
    )


def test_unsorted_page_is_a_find_in_type_id_order() -> None:
    query = SearchQuery("Patient", ("Patient",), (crit(ID, TokenValue(None, "a")),))
    assert mc.page_find(query, {}, after=None, backwards=False) == (
        {"type": "Patient", "deleted": False, "id": {"$in": ["a"]}},
        [("type", 1), ("id", 1)],
    )
    filter_doc, sort = mc.page_find(query, {}, after=["Patient", "a"], backwards=True)
    assert filter_doc["$or"] == [{"type": {"$lt": "Patient"}}, {"type": "Patient", "id": {"$lt": "a"}}]
    assert sort == [("type", -1), ("id", -1)]


def test_history_without_at_is_a_find() -> None:
    request = HistoryRequest("Patient", since="1970-01-01T00:00:02Z", count=5, before_seq=3)
    assert history_find(request) == (
        {"type": "Patient", "lu": {"$gte": 2_000_000}, "seq": {"$lt": 3}},
        [("seq", -1)],
        5,
    )
