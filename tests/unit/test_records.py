"""Routing records: parsing, validation errors that name the line, split and model selection."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from switchpoint import records
from switchpoint._messages import json_quoted, unprintable
from switchpoint.catalog import MAX_CATALOG_MODELS
from switchpoint.errors import InvalidInputError, RecordsError, UnknownModelError, WeightsError
from switchpoint.records import MAX_RECORD_CHARS, RecordSet, load_records, parse_records
from switchpoint.weights import _check_model_names, load_weights
from tests.conftest import feed_pipe


def _line(**fields: object) -> str:
    record: dict[str, object] = {
        "id": "r1", "prompt": "What is 2 + 2?", "task": "math", "split": "train",
        "scores": {"a": 1.0, "b": 0.0}, "costs": {"a": 0.002, "b": 0.0001},
    }
    record.update(fields)
    return json.dumps(record)


GOOD = _line()


def test_parse_records_happy_path_with_missing_model_as_nan() -> None:
    lines = [
        _line(id="r1", scores={"a": 1.0, "b": 0.5}, costs={"a": 0.002, "b": 0.0001}),
        "",  # blank lines are skipped
        _line(id="r2", split="test", task="code", scores={"a": 0.0}, costs={"a": 0.003}),
        _line(id="r3", scores={"c": 0.25, "a": 1}, costs={"c": 0.5, "a": 0}),
    ]
    rs = parse_records(lines, source="mem")
    assert isinstance(rs, RecordSet)
    assert len(rs) == 3
    assert rs.ids == ["r1", "r2", "r3"]
    assert rs.tasks == ["math", "code", "math"]
    assert rs.splits == ["train", "test", "train"]
    assert rs.models == ["a", "b", "c"]  # first-seen order
    assert rs.scores.shape == rs.costs.shape == (3, 3)
    assert rs.scores[0].tolist()[:2] == [1.0, 0.5]
    assert rs.costs[2, 0] == 0.0 and rs.costs[2, 2] == 0.5
    # A model missing from a record is NaN in both matrices, never 0.
    assert math.isnan(rs.scores[1, 1]) and math.isnan(rs.costs[1, 1])
    assert math.isnan(rs.scores[0, 2]) and math.isnan(rs.costs[0, 2])
    assert rs.has_splits


def test_parse_records_without_id_uses_line_number_and_no_split() -> None:
    obj = {"prompt": "hi there", "scores": {"m": 1}, "costs": {"m": 0.1}}
    rs = parse_records(["", json.dumps(obj)])
    assert rs.ids == ["line-2"]
    assert rs.splits == [None]
    assert not rs.has_splits


def test_parse_real_records(small_records: RecordSet) -> None:
    assert len(small_records) == 120
    assert len(small_records.models) == 11
    assert "gpt-4-1106-preview" in small_records.models
    assert np.all((small_records.scores >= 0) & (small_records.scores <= 1))
    assert np.all(small_records.costs >= 0)


BAD_LINES = [
    pytest.param("{not json", "not valid JSON", id="not-json"),
    pytest.param(GOOD.replace('"r1"', '"r\x00"'), "line 3: not valid JSON (a control character, "
                 "U+0000, written as it is inside a string at column 10; write it as the escape "
                 "\\u0000, or remove it)", id="raw-control-character"),
    pytest.param(GOOD[:-1] + ", }", "line 3: not valid JSON (Expecting property name enclosed in "
                 f"double quotes at column {len(GOOD) + 2})", id="comma-before-brace"),
    pytest.param(GOOD.replace('"r1"', '"r1'), "line 3: not valid JSON (Expecting ',' delimiter "
                 "at column ", id="unclosed-string-says-where"),
    pytest.param("[1, 2, 3]", "JSON object", id="not-object"),
    pytest.param('"just a string"', "JSON object", id="string-not-object"),
    pytest.param(json.dumps({"scores": {"a": 1}, "costs": {"a": 0}}), 'missing field "prompt"',
                 id="missing-prompt"),
    pytest.param(json.dumps({"prompt": "p", "costs": {"a": 0}}), 'missing field "scores"',
                 id="missing-scores"),
    pytest.param(json.dumps({"prompt": "p", "scores": {"a": 1}}), 'missing field "costs"',
                 id="missing-costs"),
    pytest.param(_line(prompt=""), "prompt", id="empty-prompt"),
    pytest.param(_line(prompt="   \n\t"), "prompt", id="whitespace-prompt"),
    pytest.param(_line(prompt=42), "prompt", id="non-string-prompt"),
    pytest.param(_line(scores={"a": 1.5, "b": 0}), "scores[\"a\"]", id="score-above-1"),
    pytest.param(_line(scores={"a": 1, "b": -0.1}), "scores[\"b\"]", id="score-below-0"),
    pytest.param(_line(scores={"a": True, "b": 0}), "scores[\"a\"]", id="bool-score"),
    pytest.param(_line(scores={"a": "1", "b": 0}), "scores[\"a\"]", id="string-score"),
    pytest.param(_line(scores={"a": None, "b": 0}), "scores[\"a\"]", id="null-score"),
    pytest.param(_line(costs={"a": -0.001, "b": 0}), "costs[\"a\"]", id="negative-cost"),
    pytest.param(_line(costs={"a": float("nan"), "b": 0}), "costs[\"a\"]", id="nan-cost"),
    pytest.param(_line(costs={"a": float("inf"), "b": 0}), "costs[\"a\"]", id="inf-cost"),
    pytest.param(_line(scores={"a": float("nan"), "b": 0}), "scores[\"a\"]", id="nan-score"),
    pytest.param(_line(costs={"a": 0.1, "c": 0.2}), "same models", id="different-models"),
    pytest.param(_line(costs={"a": 0.1}), '"scores" and "costs" must name the same models',
                 id="cost-missing-model"),
    pytest.param(_line(scores={}, costs={}), "scores", id="empty-scores"),
    pytest.param(_line(scores=[1, 0]), "scores", id="scores-not-object"),
    pytest.param(_line(costs=[1, 0]), "costs", id="costs-not-object"),
    pytest.param(_line(split=3), "split", id="split-not-string"),
    pytest.param(_line(id=["x"]), "id", id="id-not-string"),
    pytest.param(_line(scores={"a": 10**400, "b": 0}),
                 "scores[\"a\"] is an integer of 401 digits, past the largest a number holds "
                 "(about 1.8e308); it must be finite", id="huge-score"),
    pytest.param(_line(costs={"a": 1e300, "b": 0}),
                 "costs[\"a\"] is 1e+300; it must be finite and [0.0, 1000.0]", id="dear-cost"),
    pytest.param(_line(costs={"a": 10**400, "b": 0}),
                 "costs[\"a\"] is an integer of 401 digits, past the largest a number holds "
                 "(about 1.8e308); it must be finite", id="huge-cost"),
    pytest.param(GOOD.replace('"r1"', "1" + "0" * 5000),
                 "not valid JSON (a number of 5001 digits is too long to read)",
                 id="id-too-long"),
    pytest.param(_line(prompt="hello \ud800"), 'field "prompt" holds a lone surrogate',
                 id="lone-surrogate"),
    pytest.param(GOOD.replace('"r1"', "[" * 100_000 + "]" * 100_000),
                 "not valid JSON (arrays or objects nested too deeply to read)",
                 id="nested-too-deeply"),
    pytest.param(GOOD[:-1] + ', "scores": {"a": 0, "b": 0}}',
                 'line 3: the key "scores" is written twice in one object; keep one',
                 id="field-twice"),
    pytest.param(GOOD.replace('"costs": {', '"costs": {"b": 0.5, ', 1),
                 'line 3: the key "b" is written twice in one object; keep one',
                 id="model-twice"),
]


@pytest.mark.parametrize(("name", "shown"), [("", '""'), ("   ", '"   "'), ("\t", '"\\t"')])
def test_a_model_named_nothing_is_refused_naming_the_line(
        tmp_path: Path, name: str, shown: str) -> None:
    """A model whose name is empty or only spaces (a spreadsheet's blank column header) would
    be fitted into weights that answer with it, a name no config can give (add-model refuses
    one too): the records are refused as they are read."""
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join([GOOD, _line(id="r2", scores={"a": 1.0, name: 0.5},
                                           costs={"a": 0.1, name: 0.2})]) + "\n")
    with pytest.raises(RecordsError) as info:
        load_records(path)
    assert info.value.line == 2
    assert str(info.value).startswith(f"'{path}', line 2: a model is named {shown}, ")
    assert str(info.value).endswith("; rename the model in the records")


@pytest.mark.parametrize(("name", "shown", "char"), [
    ("evil\x1b[2J\nmodel", '"evil\\u001b[2J\\nmodel"', "U+001B (character 5)"),
    ("safe\u202eldom", '"safe\\u202eldom"', "U+202E (character 5)"),
    ("zero\u200bwidth", '"zero\\u200bwidth"', "U+200B (character 5)"),
])
def test_a_model_name_a_terminal_would_not_show_as_itself_is_refused_naming_the_line(
        tmp_path: Path, name: str, shown: str, char: str) -> None:
    """Records are refused as they are read (before any fitting), by the rule a weights
    package's model names follow, with the same words."""
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join([GOOD, _line(id="r2", scores={"a": 1.0, name: 0.5},
                                           costs={"a": 0.1, name: 0.2})]) + "\n")
    with pytest.raises(RecordsError) as info:
        load_records(path)
    message = str(info.value)
    assert info.value.line == 2
    assert message.startswith(f"'{path}', line 2: model {shown} holds {char}: a model's name is "
                              "printed in answers")
    assert "\n" not in message and unprintable(message) is None
    with pytest.raises(WeightsError) as weights_error:
        _check_model_names([name], tmp_path)
    assert str(weights_error.value).split(": ", 1)[1].split(";")[0] == \
        message.split(": ", 1)[1].split(";")[0]


@pytest.mark.parametrize(("bad", "needle"), BAD_LINES)
def test_bad_line_raises_records_error_naming_the_line(bad: str, needle: str) -> None:
    lines = [_line(id="first"), "", bad]  # the bad line is line 3 (blank lines still count)
    with pytest.raises(RecordsError) as info:
        parse_records(lines, source="data.jsonl")
    err = info.value
    assert err.line == 3
    assert err.source == "data.jsonl"
    assert str(err).startswith("'data.jsonl', line 3: ")
    assert needle in str(err)
    assert isinstance(err, ValueError)


def test_duplicate_id_names_the_second_line() -> None:
    with pytest.raises(RecordsError) as info:
        parse_records([_line(id="same"), _line(id="other"), _line(id="same")], source="f")
    assert info.value.line == 3
    assert 'duplicate id "same"' in str(info.value)


def test_a_file_of_prompts_given_as_records_says_what_a_record_holds() -> None:
    # (the tour's prompts file given to fit or eval): the error named the missing field alone
    with pytest.raises(RecordsError) as info:
        parse_records([json.dumps({"id": "q1", "prompt": "What is 2 + 2?"})],
                      source="prompts.jsonl")
    said = str(info.value)
    assert said.startswith("'prompts.jsonl', line 1: missing field \"scores\"; "), said
    assert '"scores": {"<model>": quality from 0 to 1, ...}' in said, said
    assert "a file of prompts alone is routed with switchpoint route --input" in said, said


def test_records_naming_more_models_than_a_catalog_holds_are_refused_at_the_line() -> None:
    # 300,000 models in one line were fitted: a package of 300,000 profile files, and a
    # matrix of records by models as large as the file allowed.
    def line(i: int, models: range) -> str:
        return json.dumps({"id": str(i), "prompt": "p", "scores": {f"m{j}": 0.5 for j in models},
                           "costs": {f"m{j}": 0.0 for j in models}})

    fits = parse_records([line(1, range(600)), line(2, range(400, 1000))])
    assert len(fits.models) == MAX_CATALOG_MODELS
    with pytest.raises(RecordsError) as info:
        parse_records([line(1, range(600)), line(2, range(400, 1001))], source="r.jsonl")
    assert info.value.line == 2
    assert "names 1,001 models with the lines before it; records name at most 1,000" in str(
        info.value)
    with pytest.raises(RecordsError, match="names 400,000 models"):  # (a line fit reads)
        parse_records([line(1, range(400_000))])

def test_records_making_a_table_of_labels_past_its_bound_are_refused_at_the_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Each record holds a place for every model any record names: a 12 MB file of 200,000
    # records, each labelling one of 1,000 models, was read into tables of 1.6 GB each (8 GB
    # at its peak). It is refused at the line past the bound (50 million places; a smaller
    # one here, as quick to reach), read no further.
    monkeypatch.setattr(records, "MAX_LABEL_PLACES", 10_000)
    many = json.dumps({"id": "wide", "prompt": "p", "scores": {f"m{j}": 0.5 for j in range(1000)},
                       "costs": {f"m{j}": 0.0 for j in range(1000)}})
    narrow = '{"id": %d, "prompt": "p", "scores": {"m0": 1}, "costs": {"m0": 0}}'

    def lines(count: int) -> Iterator[str]:
        yield many
        yield from (narrow % i for i in range(1, count))
        raise AssertionError("read past the line refused")

    with pytest.raises(RecordsError) as info:
        parse_records(lines(100), source="wide.jsonl")
    assert info.value.line == 11
    assert ("makes 11 records of 1,000 models with the lines before it, a table of 11,000 "
            "labels' places") in str(info.value)
    assert "more than the 10,000 a file may make; split the file by model" in str(info.value)


def test_reading_valid_records_quotes_no_model_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each label's name was quoted for an error it might make (escaping each character a
    # terminal would not show): nine tenths of reading a file of 1,000 models (111 s for 5,000
    # lines, 22 s since).
    quoted: list[object] = []

    def counted(value: object, limit: int = 60) -> str:
        quoted.append(value)
        return json_quoted(value, limit)

    monkeypatch.setattr(records, "json_quoted", counted)
    wide = {f"m{j}": 0.5 for j in range(100)}
    assert parse_records([json.dumps({"prompt": "p", "scores": wide, "costs": wide})]).models
    assert quoted == []
    with pytest.raises(RecordsError, match=r'scores\["m7"\] is 2; it must be finite'):
        parse_records([json.dumps({"prompt": "p", "scores": {**wide, "m7": 2}, "costs": wide})])


def test_records_are_held_in_tens_of_bytes_a_label() -> None:
    # Each record's labels were held as two dicts of floats until the end, about 210 bytes a
    # label at the peak: 5,000 records of 1,000 models took 1.1 GB to read (now 0.4 GB).
    import tracemalloc

    wide = {f"m{j}": 0.5 for j in range(100)}
    lines = [json.dumps({"id": i, "prompt": "p", "scores": wide, "costs": wide})
             for i in range(500)]
    tracemalloc.start()
    try:
        held = parse_records(lines)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert held.scores.shape == (500, 100) and float(held.costs[499, 99]) == 0.5
    assert peak / held.scores.size < 120, peak / held.scores.size


def test_records_past_the_most_a_file_holds_are_refused_at_the_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "MAX_RECORDS", 3)  # (a million records are slow to make)
    assert len(parse_records([_line(id=i) for i in range(3)]).ids) == 3
    with pytest.raises(RecordsError) as info:
        parse_records([_line(id=i) for i in range(4)], source="long.jsonl")
    assert info.value.line == 4
    assert "is past the 3 records a file may hold; split it into smaller files" in str(info.value)


def test_integer_ids_are_strings_and_collide_with_their_string_form() -> None:
    rs = parse_records([_line(id=7)])
    assert rs.ids == ["7"]
    with pytest.raises(RecordsError, match='duplicate id "7"'):
        parse_records([_line(id=7), _line(id="7")])


@pytest.mark.parametrize(("lines", "said"), [
    ([], "the file is empty"), ([""], "the file's 1 line is blank"),
    (["", "   ", "\n"], "the file's 3 lines are blank")])
def test_empty_input_raises(lines: list[str], said: str) -> None:
    """A file of blank lines is not called empty (its size says otherwise)."""
    with pytest.raises(RecordsError) as info:
        parse_records(lines, source="empty.jsonl")
    assert info.value.line is None
    assert str(info.value) == f"'empty.jsonl': no records found; {said}"


def test_load_records_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(RecordsError) as info:
        load_records(missing)
    assert str(missing) in str(info.value)
    assert "not found" in str(info.value)


def test_load_records_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(RecordsError, match="is a directory; pass a JSONL file"):
        load_records(tmp_path)


def test_load_records_reads_a_pipe(tmp_path: Path) -> None:
    # `switchpoint fit <(zcat records.jsonl.gz)` and `... | switchpoint fit /dev/stdin`.
    fifo = tmp_path / "records.fifo"
    writer = feed_pipe(fifo, GOOD + "\n")
    try:
        records = load_records(fifo)
    finally:
        writer.join()
    assert records.ids == ["r1"]


def test_load_records_refuses_a_line_over_the_limit_before_holding_it(tmp_path: Path) -> None:
    long = tmp_path / "long.jsonl"
    with long.open("w", encoding="utf-8") as fh:
        fh.write(GOOD + "\n")
        fh.write("x" * (MAX_RECORD_CHARS + 10))  # a line that does not end (a binary file, say)
    with pytest.raises(RecordsError) as info:
        load_records(long)
    assert info.value.line == 2
    assert str(info.value) == (f"'{long}', line 2: is over 16,777,216 characters; a record is one "
                               "line of JSON")
    fine = tmp_path / "fine.jsonl"  # a line of the limit, its end included, is read
    prompt = "p" * (MAX_RECORD_CHARS - len(_line(prompt="")) - 1)
    fine.write_text(_line(prompt=prompt) + "\n", encoding="utf-8")
    assert load_records(fine).prompts == [prompt]


def test_load_records_of_another_encoding_names_the_file(tmp_path: Path) -> None:
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes((GOOD + "\n" + GOOD.replace("r1", "r2").replace("?", "? caf\xe9")
                       + "\n").encode("latin-1"))
    with pytest.raises(RecordsError) as info:
        load_records(latin)
    assert str(info.value) == (f"'{latin}', line 2: is not UTF-8 text (byte 0xE9 at byte "
                               f"{GOOD.index('?') + 6} of the line); save the file as UTF-8")
    assert info.value.line == 2


def test_load_records_reads_file_and_names_it_in_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(_line(id="x") + "\n" + _line(id="y") + "\n", encoding="utf-8")
    rs = load_records(good)
    assert rs.ids == ["x", "y"]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(_line(id="x") + "\n" + _line(id="y", scores={"a": 2, "b": 0}) + "\n",
                   encoding="utf-8")
    with pytest.raises(RecordsError) as info:
        load_records(bad)
    assert str(info.value).startswith(f"'{bad}', line 2: ")


def _three_records() -> RecordSet:
    return parse_records([
        _line(id="t1", split="train", scores={"a": 1, "b": 0.5}, costs={"a": 1.0, "b": 0.1}),
        _line(id="s1", split="test", scores={"a": 0, "b": 0.25}, costs={"a": 2.0, "b": 0.2}),
        _line(id="t2", split="train", scores={"a": 0.75, "b": 1}, costs={"a": 3.0, "b": 0.3}),
    ])


def test_split_selects_rows_in_order() -> None:
    rs = _three_records()
    train = rs.split("train")
    assert train.ids == ["t1", "t2"]
    assert train.scores.tolist() == [[1.0, 0.5], [0.75, 1.0]]
    assert train.costs.tolist() == [[1.0, 0.1], [3.0, 0.3]]
    assert train.splits == ["train", "train"]
    test = rs.split("test")
    assert test.ids == ["s1"]
    assert test.models == rs.models


def test_split_unknown_raises_listing_splits() -> None:
    with pytest.raises(RecordsError) as info:
        _three_records().split("validation")
    assert '"validation"' in str(info.value)
    assert '"test", "train"' in str(info.value)


def test_select_models_reorders_columns_without_touching_original() -> None:
    rs = _three_records()
    only = rs.select_models(["b", "a"])
    assert only.models == ["b", "a"]
    assert only.scores[:, 0].tolist() == [0.5, 0.25, 1.0]
    assert only.costs[:, 1].tolist() == [1.0, 2.0, 3.0]
    assert only.ids == rs.ids
    single = rs.select_models(["a"])
    assert single.scores.shape == (3, 1)
    # The original is unchanged.
    assert rs.models == ["a", "b"]
    assert rs.scores[:, 0].tolist() == [1.0, 0.0, 0.75]


def test_subset_keeps_embeddings_aligned() -> None:
    rs = _three_records()
    rs.embeddings = np.arange(6, dtype=np.float32).reshape(3, 2)
    sub = rs.subset([2, 0])
    assert sub.ids == ["t2", "t1"]
    assert sub.embeddings is not None
    assert sub.embeddings.tolist() == [[4.0, 5.0], [0.0, 1.0]]


@pytest.mark.usefixtures("fresh_secrets")  # (a path of one letter repeated, quoted and cut)
def test_a_long_path_holding_a_terminal_escape_is_shown_cut_short_and_escaped(
        tmp_path: Path) -> None:
    """A records file or weights package named by a path of thousands of characters holding
    an escape sequence is named in the error quoted, cut short and escaped: the message
    neither carries the whole path nor writes the escape to the terminal printing it."""
    name = "\x1b[2J" + "r" * 5000
    for error, call in ((RecordsError, lambda: load_records(tmp_path / name)),
                        (WeightsError, lambda: load_weights(tmp_path / name)),
                        (RecordsError, lambda: parse_records([], source=tmp_path / name))):
        with pytest.raises(error) as info:
            call()
        message = str(info.value)
        assert message.startswith(f"'{tmp_path}/\\x1b[2Jrrr") and "r" * 300 not in message
        assert len(message) < 800 and unprintable(message) is None, message


def test_a_byte_order_mark_at_the_start_is_not_part_of_the_first_record(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (GOOD + "\n").encode("utf-8"))
    assert load_records(path).ids == ["r1"]
    later = tmp_path / "later.jsonl"  # (elsewhere it is a character like any other)
    later.write_text(GOOD + "\n\ufeff" + _line(id="r2") + "\n", encoding="utf-8")
    with pytest.raises(RecordsError) as info:
        load_records(later)
    assert info.value.line == 2


def test_a_model_the_fitted_split_does_not_label_is_named_with_the_file_and_split(
        tmp_path: Path) -> None:
    from switchpoint.evaluation.harness import evaluate
    from switchpoint.training import select_split

    path = tmp_path / "r.jsonl"
    path.write_text("\n".join([
        _line(id="r1", split="train"), _line(id="r2", split="train"),
        _line(id="r3", split="test", scores={"a": 1.0, "b": 0.0, "c": 1.0},
              costs={"a": 0.1, "b": 0.1, "c": 0.1})]) + "\n", encoding="utf-8")
    said = (f"'{path}': \"c\" has no label in split \"train\" (2 records), which a fit needs; "
            "label it there, fit on another split, or leave it out of the records")
    with pytest.raises(RecordsError) as info:
        select_split(load_records(path), None, path)
    assert str(info.value) == said
    with pytest.raises(RecordsError) as info:
        select_split(load_records(path), "train", path)
    assert str(info.value) == said
    with pytest.raises(RecordsError) as info:  # eval says so before embedding anything
        evaluate(path, policies=["cluster"], fit_split="train", embedder="no-such-embedder")
    assert str(info.value) == said
    assert select_split(load_records(path), "test", path).models == ["a", "b", "c"]


@pytest.mark.parametrize(("rid", "got"), [
    (True, "true"), ("", "an empty string"), ("  ", "an empty string"), (None, "null"),
    (1.5, "the number 1.5"), ([1], "a list"),
    (float("inf"), "the number infinity, too large a number (what 1e400, or any number past "
                   "about 1.8e308, reads as)")])
def test_an_id_is_a_non_empty_string_or_an_integer(rid: object, got: str) -> None:
    with pytest.raises(RecordsError) as info:
        parse_records([_line(id=rid)], source="r.jsonl")
    assert str(info.value) == ("'r.jsonl', line 1: field \"id\" must be a non-empty string or an "
                               f"integer, got {got}")


def test_a_record_sets_repr_counts_its_records_and_never_prints_them() -> None:
    """``repr`` (what a notebook shows) says how many records, which models and splits, not
    every prompt and every score: 2000 records of 1000 characters, 30 models, stay a line."""
    lines = [_line(id=f"r{i}", prompt=f"{i} " + "x" * 1000, split=("train", "test")[i % 2],
                   scores={f"model-{j}": 0.5 for j in range(30)},
                   costs={f"model-{j}": 0.001 for j in range(30)}) for i in range(2000)]
    records = parse_records(lines)
    shown = repr(records)
    assert len(shown) < 1000, shown[:1000]
    assert shown.startswith("RecordSet(2000 records, 30 models: \"model-0\", \"model-1\"")
    assert "and 10 more" in shown and '"test": 1,000, "train": 1,000' in shown
    assert "xxx" not in shown and "embeddings: none" in shown
    records.embeddings = np.zeros((2000, 2), dtype=np.float32)
    assert "embeddings: given" in repr(records)
    assert "splits: none" in repr(parse_records([_line(split=None)]))


def _by_hand(**changed: object) -> RecordSet:
    fields: dict[str, object] = {
        "ids": ["r1", "r2"], "prompts": ["p1", "p2"], "tasks": ["t", "t"],
        "splits": ["train", None], "models": ["a", "b"],
        "scores": np.array([[1.0, np.nan], [0.0, 0.5]]),
        "costs": np.array([[0.1, np.nan], [0.2, 0.3]])}
    fields.update(changed)
    return RecordSet(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "changed", "said"), [
    ("prompts", {"prompts": ["p1"]}, "has 1 entries; it must have one per record, as ids has (2)"),
    ("splits", {"splits": []}, "has 0 entries"),
    ("models", {"models": ["a", "a"]}, 'names "a" more than once'),
    ("scores", {"scores": np.zeros((2, 3))}, "has shape (2, 3); it must be (2, 2)"),
    ("costs", {"costs": np.zeros(4)}, "has shape (4,); it must be (2, 2)"),
    ("scores", {"scores": np.array([[1.0, 2.0], [0.0, 0.5]])}, "outside [0, 1]"),
    ("costs", {"costs": np.array([[-0.1, 0.0], [0.0, 0.0]])}, "outside [0, "),
    ("costs", {"costs": np.array([[np.inf, 0.0], [0.0, 0.0]])}, "outside [0, "),
    ("scores", {"scores": np.array([["1", "0"], ["0", "1"]])}, "must hold numbers"),
    ("embeddings", {"embeddings": np.zeros((3, 4), dtype=np.float32)}, "one row per record"),
], ids=["prompts short", "splits empty", "a model twice", "scores' columns", "costs flat",
        "a score of 2", "a negative cost", "an infinite cost", "scores of text",
        "embeddings' rows"])
def test_records_built_by_hand_must_be_aligned_and_in_range(
        field: str, changed: dict[str, object], said: str) -> None:
    """A RecordSet built in Python is checked as a file's records are: one prompt, task and
    split per id, a score and a cost per record and model, scores in [0, 1] and costs from 0
    (NaN: unlabelled). A prompt short was an IndexError deep in fit; a score of 2 was fitted."""
    assert len(_by_hand()) == 2  # (the unchanged set is taken, NaN labels and a None split)
    with pytest.raises(InvalidInputError) as caught:
        _by_hand(**changed)
    assert caught.value.field == field and said in caught.value.reason, caught.value


@pytest.mark.parametrize(("rows", "said"), [
    ([3], "row 3 is past these 3 records; rows are numbered from 0 to 2"),
    ([-4], "row -4 is past these 3 records"),
    ("02", "must be a list of row numbers (whole numbers), got str"),
    ([0.0, 1.0], "got list of float64"),
    (np.array([True, False, True]), "pass the row numbers, np.flatnonzero(mask)"),
    (1, "got int"),
], ids=["past the end", "past the start", "a string", "floats", "a boolean mask", "one number"])
def test_subset_refuses_what_is_no_row_of_the_records(rows: object, said: str) -> None:
    """A row past the records was an IndexError; a boolean mask was read as rows 1, 0 and 1
    (True and False as numbers), the wrong records taken without a word."""
    rs = _three_records()
    with pytest.raises(InvalidInputError) as caught:
        rs.subset(rows)  # type: ignore[arg-type]
    assert caught.value.field == "rows" and said in caught.value.reason, caught.value
    assert rs.subset([-1]).ids == ["t2"] and len(rs.subset([])) == 0


@pytest.mark.parametrize(("names", "error", "said"), [
    (["a", "nope"], UnknownModelError, 'unknown model(s) "nope"; known models are: "a", "b"'),
    ([], InvalidInputError, "is empty"),
    ("a", InvalidInputError, "must be a list of model names, got str"),
    (["a", "a"], InvalidInputError, 'names "a" more than once'),
], ids=["unknown", "empty", "a string", "twice"])
def test_select_models_refuses_a_model_the_records_do_not_hold(
        names: object, error: type[InvalidInputError], said: str) -> None:
    """An unknown model was Python's ValueError ("'nope' is not in list"), a string was read
    letter by letter, and an empty list gave records of no model."""
    rs = _three_records()
    with pytest.raises(error) as caught:
        rs.select_models(names)  # type: ignore[arg-type]
    assert caught.value.field == "names" and said in caught.value.reason, caught.value
    assert rs.models == ["a", "b"]
