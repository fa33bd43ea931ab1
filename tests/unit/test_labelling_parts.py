"""Labelling's pure parts: the judge's strict reply parser, reference scoring, the prompts file,
and what a rerun resumes from (the output and its journal), all without calling anything."""

from __future__ import annotations

import json
import math
import os
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from switchpoint.errors import JudgeReplyError, LabellingError
from switchpoint.labelling import (
    CONTRACT,
    DEFAULT_RUBRIC,
    Judge,
    LabelPrompt,
    parse_judge_reply,
    parse_prompts,
    read_prompts,
    reference_score,
)
from switchpoint.labelling import journal as jr
from switchpoint.labelling.judge import MAX_RUBRIC_CHARS, unreadable_message
from switchpoint.labelling.lock import OutputLock, lock_path
from switchpoint.labelling.reference import (
    answer_list,
    answer_number,
    normalise,
    parse_list,
    parse_number,
)
from switchpoint.records import load_records

# The judge's replies ---------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "score"), [
    ('{"score": 0.8}', 0.8),
    ('{"score":1}', 1.0),
    ('{"score": 0}', 0.0),
    ('  {"score": 0.25}\n', 0.25),
    ('{"score": 0.7, "reason": "right, but terse"}', 0.7),
    ('{"reason": "fine", "score": 5e-1}', 0.5),
    ('```json\n{"score": 0.9}\n```', 0.9),
    ('```\n{"score": 0.4}\n```', 0.4),
    ("0.8", 0.8),
    ("1", 1.0),
    ("1.0", 1.0),
    (".5", 0.5),
    ("0\n", 0.0),
    ("0." + "0" * 1000 + "1", 0.0),
])
def test_the_judge_protocol_accepts_a_score_object_or_a_bare_number(reply: str,
                                                                     score: float) -> None:
    assert parse_judge_reply(reply) == score


@pytest.mark.parametrize(("reply", "reason"), [
    (None, "no text"),
    ("", "empty"),
    ("   \n ", "empty"),
    ("Score: 0.8", "neither a JSON object"),
    ("80%", "neither a JSON object"),
    ("4/5", "neither a JSON object"),
    ("0,8", "neither a JSON object"),
    ("zero point eight", "neither a JSON object"),
    # A bare number but for its exponent is told so and how to write it, 1e-400 too.
    ("1e-1", '"1e-1" is a bare number with an exponent, which a bare score does not take: write '
             'it in plain digits (0.1, not 1e-1), or as a JSON object ({"score": 1e-1})'),
    ("1e-400", '"1e-400" is a bare number with an exponent, which a bare score does not take'),
    ("-2.5E+3", "a bare number with an exponent"),
    ("1e999", "a bare number with an exponent"),
    ("1e", "neither a JSON object"),
    ("0.8 0.9", "neither a JSON object"),
    ("8", "outside [0, 1]"),
    ("1.2", "outside [0, 1]"),
    ("-0.1", "outside [0, 1]"),
    ("\uff10.5", "neither a JSON object"),  # fullwidth digits: float() would read 0.5
    ("\u0660.\u0665", "neither a JSON object"),  # Arabic-Indic digits
    ("2." + "0" * 20_000, "the score 2." + "0" * 35 + "... is outside"),
    ('{"score": 8}', "outside [0, 1]"),
    ('{"score": -0.5}', "outside [0, 1]"),
    ('{"score": "0.8"}', "not a number"),
    ('{"score": true}', "not a number"),
    ('{"score": null}', "not a number"),
    ('{"score": [0.8]}', "not a number"),
    ('{"score": {"value": 0.8}}', "not a number"),
    ('{"score": NaN}', "not a finite number"),
    ('{"score": Infinity}', "not a finite number"),
    ('{"score": 1' + "0" * 400 + "}", "the score (an integer of 401 digits, past "
     "the largest a number holds (about 1.8e308)) is outside [0, 1]"),
    ('{"score": 1' + "0" * 5000 + "}", "a number of 5001 digits is too long to read"),
    ('{"score": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply to read"),
    ('{"Score": 0.8}', 'no "score" key (it has "Score")'),
    ('{"rating": 0.8, "reason": "ok"}', 'no "score" key (it has "rating", "reason")'),
    ("{}", 'no "score" key (it has no keys)'),
    ("{" + ", ".join(f'"k{i}": 0' for i in range(30)) + "}",
     'no "score" key (it has "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k10", '
     '"k11", "k12", "k13", "k14", "k15", "k16", "k17", "k18", "k19" and 10 more)'),
    ('{"score": 0.8', "not valid JSON"),
    ("{score: 0.8}", "not valid JSON"),
    ('{"score": 0.8, "score": 0.2}', 'the object repeats "score"'),
    ('{"score": 0.8}\n{"score": 0.1}', "text after the JSON object"),
    ('{"score": 0.8} I am confident.', "text after the JSON object"),
    ("[0.8]", "neither a JSON object"),
    ("The answer is correct.\n0.9", "text besides the score"),
    ('Reasoning first.\n{"score": 0.9}', "text besides the score"),
    ("0.8\nThe answer is mostly right.", "text besides the score"),
    ('```json\n{"score": 0.9}\n```\nHope this helps', "text besides the score"),
])
def test_anything_else_is_refused_with_a_reason_never_guessed(reply: str | None,
                                                               reason: str) -> None:
    with pytest.raises(JudgeReplyError) as info:
        parse_judge_reply(reply)
    assert reason in info.value.reason
    assert info.value.reply == (reply or "")


@pytest.mark.parametrize("reply", ["-0", "-0.0", "-.0", '{"score": -0.0}', '{"score": -0}'])
def test_a_score_of_minus_zero_is_zero(reply: str) -> None:
    # It was kept as -0.0 and written so into the routing records.
    score = parse_judge_reply(reply)
    assert score == 0.0 and math.copysign(1.0, score) == 1.0, score


def test_a_long_number_is_cut_short_in_the_reminder_and_the_failure() -> None:
    # A reply of 20,000 digits went whole into the reason: the reminder sent back to the judge
    # and the failure the summary prints (80 KB for one prompt).
    reply = "9" * 20_000
    with pytest.raises(JudgeReplyError) as info:
        parse_judge_reply(reply)
    assert len(info.value.reason) < 200, len(info.value.reason)
    retry = Judge("grader").retry_messages("q", "a", info.value)
    assert len(retry[3]["content"]) < 500
    assert len(unreadable_message([info.value, info.value])) < 800


def test_the_judge_always_gets_the_reply_contract_and_a_reminder_that_says_why() -> None:
    custom = Judge("grader", rubric="Grade SQL answers: 1 only if the query runs and is right.")
    system, user = custom.messages("List the users.", "SELECT * FROM users;")
    assert system["role"] == "system"
    assert system["content"].startswith("Grade SQL answers")
    assert system["content"].endswith(CONTRACT)
    assert "List the users." in user["content"] and "SELECT * FROM users;" in user["content"]
    assert Judge("grader").messages("q", "a")[0]["content"].startswith(DEFAULT_RUBRIC)
    with pytest.raises(JudgeReplyError) as info:
        parse_judge_reply("8/10")
    retry = custom.retry_messages("List the users.", "SELECT * FROM users;", info.value)
    assert retry[:2] == [system, user]
    assert retry[2] == {"role": "assistant", "content": "8/10"}
    assert retry[3]["role"] == "user"
    assert info.value.reason in retry[3]["content"] and '{"score": S}' in retry[3]["content"]
    assert custom.rubric_id != Judge("grader").rubric_id
    with pytest.raises(ValueError, match="rubric: is empty"):
        Judge("grader", rubric="  ")
    assert Judge("grader", rubric="x" * MAX_RUBRIC_CHARS).rubric_id
    with pytest.raises(ValueError, match="rubric: is longer than 100,000 characters"):
        Judge("grader", rubric="x" * (MAX_RUBRIC_CHARS + 1))


def test_an_unreadable_judge_is_reported_quoting_each_reply_once() -> None:
    errors = []
    for reply in ("Score: 8/10", "eight"):
        with pytest.raises(JudgeReplyError) as info:
            parse_judge_reply(reply)
        errors.append(info.value)
    message = unreadable_message(errors)
    assert message.count("Score: 8/10") == 1, message
    assert message.count("eight") == 1 and "; then " in message, message
    assert message == ('the judge\'s replies could not be read as a score: "Score: 8/10" is '
                       "neither a JSON object with a \"score\" nor a bare number; then \"eight\" "
                       "is neither a JSON object with a \"score\" nor a bare number")
    with pytest.raises(JudgeReplyError) as info:
        parse_judge_reply("It's \x1b[2J" + "x" * 500)
    assert info.value.reason.startswith('"It\'s \\u001b[2Jxxx')
    assert info.value.reason[114:].startswith('xxxx…" is neither')  # cut at 120 characters


# Reference answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "reference", "score"), [
    # Numbers: the marked final answer, else the last number; separators, $ and % ignored.
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72", 1.0),
    ("She has 18 dollars left.", 18, 1.0),
    ("The answer is $1,234.", "1234", 1.0),
    ("So the total is 1234.0", "$1,234", 1.0),
    ("Final answer: -3", "-3", 1.0),
    ("5 - 8 = -3", -3, 1.0),
    ("Half of it: 0.75", "3/4", 1.0),
    ("3/4 of the cake", 0.75, 1.0),
    ("\\boxed{42}, then 7 more steps", "42", 1.0),
    ("Answer: 12 apples (3 boxes of 4)", "12", 1.0),
    ("the rate is 50%", "50%", 1.0),
    ("It weighs 18kg", "18", 1.0),
    ("It is 71.9", "72", 0.0),
    ("#### 73", "72", 0.0),
    ("Answer: 12 apples, not 13", "13", 0.0),
    ("I do not know.", "72", 0.0),
    ("version v1.5 of it", "1.5", 0.0),
    ("Answer: " + "1" * 400 + "/3", "5", 0.0),
    ("Answer: " + "1" * 400, 1e300, 0.0),
    # A comma groups thousands only in threes; "1,5" is no number, so it is compared as text.
    ("Answer: 1,500", "1500", 1.0),
    ("Answer: 1,500", "1,500", 1.0),
    ("Answer: 1.5", "1,5", 0.0),
    ("Answer: 15", "1,5", 0.0),
    ("Answer: 1,5", "1,5", 1.0),
    ("Answer: 1,5.", "1,5", 1.0),
    ("Answer: 1,5", "15", 0.0),
    ("Answer: 1,5", "5", 0.0),
    ("Answer: 1,5", 1.5, 0.0),
    ("Answer: 1,5000", "1500", 0.0),
    ("Answer: 3,25", "3.25", 0.0),
    # A reference listing numbers matches the answer's final list: same numbers, same order.
    ("The primes are 2,3,5", "2,3,5", 1.0),
    ("The primes are 2, 3, 5.", "2,3,5", 1.0),
    ("Answer: 2,3,5", "[2, 3, 5]", 1.0),
    ("\\boxed{2,3,5}, checked with 1,2", "2,3,5", 1.0),
    ("Try 1,2 first; in the end 2,3,5", "2,3,5", 1.0),
    ("Answer: \u22121.5, 2", "-1.5,2", 1.0),
    ("Answer: 1, 5", "1,5", 1.0),
    ("The primes are 2,3,5,7", "2,3,5", 0.0),
    ("The primes are 2,3", "2,3,5", 0.0),
    ("The primes are 5,3,2", "2,3,5", 0.0),
    ("The primes are 2,3,5", "5", 0.0),
    ("Answer: 1,2.5", "1,2", 0.0),
    ("version v2,3,5", "2,3,5", 0.0),
    ("Answer: 1,500", "1,5", 0.0),
    ("Answer: 1,500", "1,500,2", 0.0),
    # Text: normalised equality of the whole answer or one of its final-answer places.
    ("Paris", "paris", 1.0),
    ("The answer is Paris.", "Paris", 1.0),
    ("**Paris**", "Paris", 1.0),
    ("Answer: (B)", "B", 1.0),
    ("Let me think.\nB", "b", 1.0),
    ("The U.S.A.", "USA", 1.0),
    ("Ｐａｒｉｓ", "Paris", 1.0),
    ("Paris, France", "Paris", 0.0),
    ("B) Mercury", "B", 0.0),
    ("Not Paris.", "Paris", 0.0),
    ("", "Paris", 0.0),
])
def test_reference_scoring(answer: str, reference: str | float, score: float) -> None:
    assert reference_score(answer, reference) == score


def test_reference_helpers() -> None:
    assert parse_number("1,234.5") == 1234.5
    assert parse_number("3/4") == 0.75
    assert parse_number("1,500") == 1500
    assert parse_number("1,5") is None and parse_number("1,5000") is None
    assert parse_number("12,345,678") == 12345678
    assert answer_number("between 1,5 and 2") == 2
    assert parse_list("2, 3,5") == [2, 3, 5] and parse_list("(1,5)") == [1, 5]
    assert parse_list("1,500") is None and parse_list("12,345,678") is None  # one number each
    assert parse_list("2,3,x") is None and parse_list("2,3,") is None and parse_list(7) is None
    assert answer_list("no list, 7 here") is None
    assert normalise("Answer: 1,5.") == "answer 1,5"
    assert parse_number("Paris") is None
    assert parse_number("1984 (the novel)") is None  # text: compared as text
    assert parse_number(math.inf) is None
    assert parse_number(10**400) is None
    assert answer_number("Answer: " + "1" * 400 + "/3") is None  # not a float: no number
    assert answer_number("no digits here") is None
    assert normalise("  The  **Quick**, brown fox! ") == "quick brown fox"
    assert reference_score(None, "x") == 0.0


def test_reference_lists_are_found_in_linear_time() -> None:
    """A long answer of near-lists (each item spaced, the last glued to a word) is read in one
    pass, not once per item."""
    answer = "12345 , " * 20000 + "9a"
    started = time.perf_counter()
    assert reference_score(answer, "2,3,5") == 0.0 and answer_list(answer) is None
    assert time.perf_counter() - started < 2.0  # quadratic, it took minutes


# The prompts file ------------------------------------------------------------------------------


def test_plain_text_is_one_prompt_per_line_with_an_id_from_its_text() -> None:
    items = parse_prompts(["What is 2+2?\n", "\n", "Name a prime.\r\n"])
    assert [p.prompt for p in items] == ["What is 2+2?", "Name a prime."]
    assert [p.line for p in items] == [1, 3]
    assert items[0].id.startswith("p-") and items[0].id != items[1].id
    assert parse_prompts(["Name a prime.\n"])[0].id == items[1].id  # stable across reruns


def test_jsonl_fields() -> None:
    items = parse_prompts([
        json.dumps({"id": 7, "prompt": "Sum 2 and 3", "task": "math", "split": "train",
                    "reference": 5}),
        json.dumps({"prompt": "Capital of France?", "reference": "Paris", "source": "x"}),
        json.dumps({"prompt": "Rows", "scores": {"a": 1}, "costs": {"a": 0}}),  # a records line
    ])
    assert items[0] == LabelPrompt(id="7", prompt="Sum 2 and 3", task="math", split="train",
                                   reference=5.0, line=1)
    assert items[1].reference == "Paris" and items[1].task is None
    assert items[2].reference is None


@pytest.mark.parametrize(("lines", "message"), [
    (['{"prompt": "a"}', "plain text"], "line 2: not valid JSON (Expecting value at column 1)"),
    (['{"prompt": "a\x00b"}'], "line 1: not valid JSON (a control character, U+0000, written "
                                "as it is inside a string at column 14; write it as the escape "
                                "\\u0000, or remove it)"),
    (['{"prompt": "a", "id": "x}'], "line 1: not valid JSON (Unterminated string starting at "
                                    "column 23)"),
    (['{"prompt": "a"}', '{"prompt": "b", "prompt": "c"}'],
     'line 2: the key "prompt" is written twice in one object; keep one'),
    (['{"id": "x"}'], 'line 1: missing field "prompt"'),
    (['{"prompt": ""}'], 'line 1: field "prompt" must be a non-empty string'),
    (['{"prompt": 3}'], 'line 1: field "prompt" must be a non-empty string'),
    (['{"prompt": "a", "id": true}'], 'line 1: field "id" must be'),
    (['{"prompt": "a", "task": 3}'], 'line 1: field "task" must be a non-empty string'),
    (['{"prompt": "a", "split": ""}'], 'line 1: field "split" must be a non-empty string'),
    (['{"prompt": "a", "reference": true}'], 'line 1: field "reference" must be a string'),
    (['{"prompt": "a", "reference": ""}'], 'line 1: field "reference" is empty'),
    (['{"prompt": "a", "reference": [1]}'], 'line 1: field "reference" must be a string'),
    (['{"prompt": "a", "reference": NaN}'], 'line 1: field "reference" must be a finite'),
    (['{"prompt": "a", "reference": 1' + "0" * 400 + "}"],
     'line 1: field "reference" must be a finite number'),
    (['{"prompt": "a", "id": 1' + "0" * 5000 + "}"],
     "line 1: not valid JSON (a number of 5001 digits is too long to read)"),
    (['{"prompt": "a", "id": ' + "[" * 100_000 + "]" * 100_000 + "}"],
     "line 1: not valid JSON (arrays or objects nested too deeply to read)"),
    ([json.dumps({"prompt": "hello \ud800 world"})], 'line 1: field "prompt" holds a lone '
                                                     "surrogate"),
    ([json.dumps({"prompt": "a", "id": "x\udc80"})], 'line 1: field "id" holds a lone '
                                                     "surrogate"),
    ([json.dumps({"prompt": "a", "task": "\udc80"})], 'line 1: field "task" holds a lone'),
    ([json.dumps({"prompt": "a", "reference": "\udc80"})], 'line 1: field "reference" holds'),
    (['{"prompt": "a", "refrence": "b"}'], 'line 1: unknown field "refrence"; did you mean '
                                           '"reference"?'),
    (['{"prompt": "a", "id": "x"}', '{"prompt": "b", "id": "x"}'],
     'line 2: repeats id "x" of line 1'),
    (['{"prompt": "same"}', '{"prompt": "same"}'], "line 2: repeats the prompt of line 1"),
    (["same\n", "other\n", "same\n"], "line 3: repeats the prompt of line 1"),
    (['{"prompt": "a"}', '["a list"]'], "line 2: each line must be a JSON object"),
    ([], "no prompts found; the file is empty"),
    (["", "  \n"], "no prompts found; the file's 2 lines are blank"),
])
def test_bad_lines_are_named(lines: list[str], message: str) -> None:
    with pytest.raises(LabellingError) as info:
        parse_prompts(lines, source="prompts")
    assert str(info.value).startswith("'prompts'")
    assert message in str(info.value)


def test_read_prompts_checks_the_file(tmp_path: Path) -> None:
    with pytest.raises(LabellingError, match="file not found"):
        read_prompts(tmp_path / "missing.jsonl")
    with pytest.raises(LabellingError, match="is a directory"):
        read_prompts(tmp_path)
    fifo = tmp_path / "pipe"  # a pipe reads as a file does (/dev/stdin fed by one, say)
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=("one prompt\n",))
    writer.start()
    assert [p.prompt for p in read_prompts(fifo)] == ["one prompt"]
    writer.join()
    latin = tmp_path / "latin.txt"
    latin.write_bytes("fine\ncaf\xe9?\n".encode("latin-1"))
    with pytest.raises(LabellingError) as info:
        read_prompts(latin)
    assert info.value.line == 2 and str(info.value) == (
        f"'{latin}', line 2: is not UTF-8 text (byte 0xE9 at byte 4 of the line); save the "
        "file as UTF-8")


def test_a_byte_order_mark_at_the_start_is_not_part_of_the_first_line(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\ufeff" + json.dumps({"id": "q1", "prompt": "Sum 2 and 3"}) + "\n",
                    encoding="utf-8")
    assert read_prompts(path) == [LabelPrompt(id="q1", prompt="Sum 2 and 3", line=1)]
    text = tmp_path / "prompts.txt"
    text.write_text("\ufeffWhat is 2+2?\n", encoding="utf-8")
    assert [p.prompt for p in read_prompts(text)] == ["What is 2+2?"]


# Resuming --------------------------------------------------------------------------------------

KEY = jr.RunKey(models=("a", "b"), judge="j", rubric="r1", max_tokens=None)


def _prompts(n: int = 3) -> list[LabelPrompt]:
    return [LabelPrompt(id=f"p{i}", prompt=f"Prompt {i}?", line=i + 1) for i in range(n)]


def _record(i: int, models: tuple[str, ...] = ("a", "b")) -> str:
    return json.dumps({"id": f"p{i}", "prompt": f"Prompt {i}?",
                       "scores": {m: 0.5 for m in models}, "costs": {m: 0.001 for m in models}})


def _scored(i: int, model: str, score: float = 0.7) -> str:
    prompt = _prompts(i + 1)[i]
    return json.dumps(jr.Scored(id=prompt.id, model=model, digest=prompt.digest, score=score,
                                cost_usd=0.002, by="judge", judge_cost_usd=0.0001).to_line())


def test_nothing_to_resume(tmp_path: Path) -> None:
    state = jr.inspect(tmp_path / "out.jsonl", _prompts(), KEY)
    assert state.done == set() and state.scored == {} and state.notes == []
    state.apply()
    assert not (tmp_path / "out.jsonl").exists()


def test_a_half_written_last_line_is_dropped_with_a_note_and_only_then(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    before = (_record(0) + "\n" + _record(1)[:30]).encode()
    out.write_bytes(before)
    state = jr.inspect(out, _prompts(), KEY)
    assert state.done == {"p0"}
    assert out.read_bytes() == before  # inspecting changes nothing
    assert any("dropped the half-written last line (line 2)" in n for n in state.notes)
    state.apply()
    assert out.read_text() == _record(0) + "\n"
    assert load_records(out).ids == ["p0"]


@pytest.mark.parametrize("content", ["my important notes", "\n\nmy important notes",
                                     _record(0)[:30]])
def test_a_lone_unfinished_line_is_not_taken_for_a_half_written_record(
        tmp_path: Path, content: str) -> None:
    out = tmp_path / "notes.txt"
    out.write_text(content)
    with pytest.raises(LabellingError) as info:
        jr.inspect(out, _prompts(), KEY)
    assert "not valid JSON" in str(info.value) and "another --out" in str(info.value)
    assert "--restart" not in str(info.value)  # restarting would discard someone's file
    assert out.read_text() == content


def test_a_lone_half_written_record_is_dropped_when_the_runs_journal_is_there(
        tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(_record(0)[:30])
    jr.journal_path(out).write_text(json.dumps(KEY.header()) + "\n")
    state = jr.inspect(out, _prompts(), KEY)
    assert any("dropped the half-written last line (line 1)" in n for n in state.notes)
    state.apply()
    assert out.read_text() == ""


def test_a_whole_last_line_without_its_newline_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(_record(0) + "\n" + _record(1))
    state = jr.inspect(out, _prompts(), KEY)
    assert state.done == {"p0", "p1"} and state.notes == []
    state.apply()
    assert out.read_text() == _record(0) + "\n" + _record(1) + "\n"


def test_the_journal_keeps_scored_answers_of_unfinished_prompts(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(_record(0) + "\n")
    failed = json.dumps(jr.failure_line(_prompts()[2], "a", "judge", "unreadable"))
    journal = jr.journal_path(out)
    journal.write_text("\n".join([json.dumps(KEY.header()), _scored(0, "a"), _scored(0, "b"),
                                  _scored(1, "a", 0.25), failed, _scored(2, "b")[:20]]))
    state = jr.inspect(out, _prompts(), KEY)
    assert state.done == {"p0"}
    assert set(state.scored) == {("p1", "a")}  # p0 is done; p2/a failed; p2/b half-written
    assert state.scored[("p1", "a")].score == 0.25
    assert state.journal_has_header
    assert any("half-written" in n and "journal" in n for n in state.notes)


def _answered(i: int, model: str, answer: str = "Because of Rayleigh scattering.") -> str:
    """An answer's line, as a run writes it the moment the answer arrives."""
    line = jr.answer_line(_prompts(i + 1)[i], model, answer, 0.0021)
    assert line is not None
    return json.dumps(line, ensure_ascii=False)


def _failed(i: int, model: str, stage: str = "judge") -> str:
    return json.dumps(jr.failure_line(_prompts(i + 1)[i], model, stage,
                                      "the judge's reply could not be read as a score"))


def _kept_on_failure(i: int, model: str) -> str:
    """A judging failure's line keeping the answer, as an earlier version wrote it."""
    return json.dumps({**json.loads(_failed(i, model)), **json.loads(_answered(i, model))})


def test_an_answer_journalled_but_not_scored_is_kept_to_be_judged(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    journal = jr.journal_path(out)
    journal.write_text("\n".join([
        json.dumps(KEY.header()),
        _answered(0, "a", "Blue — é ✓"),  # the run stopped while it was judged
        _kept_on_failure(0, "b"),
        _answered(1, "a"), _scored(1, "a", 0.25),  # judged: the score is kept, not the answer
        _answered(1, "b"), _failed(1, "b"),  # the judge failed to score it
        _failed(2, "a", "answer"),  # the model's call failed: no answer
        _answered(2, "b"), ""]), encoding="utf-8")
    state = jr.inspect(out, _prompts(), KEY)
    assert set(state.kept) == {("p0", "a"), ("p0", "b"), ("p1", "b"), ("p2", "b")}
    kept = state.kept[("p0", "a")]
    assert (state.answer(("p0", "a"), kept), kept.cost_usd) == ("Blue — é ✓", 0.0021)
    assert set(state.scored) == {("p1", "a")}
    assert any("4 answers an earlier run got but did not score are kept; they are scored "
               "now by the judge, not asked for again" in n for n in state.notes), state.notes
    # A prompt whose text changed since is asked again (its answer and score count once in
    # the note); one already in the output is done.
    changed = [_prompts()[0], LabelPrompt(id="p1", prompt="Another prompt", line=2),
               _prompts()[2]]
    out.write_text(_record(0) + "\n")
    state = jr.inspect(out, changed, KEY)
    assert set(state.kept) == {("p2", "b")} and state.scored == {}
    assert any("2 journalled answers are for prompts no longer in the prompts file" in n
               for n in state.notes), state.notes
    assert any("1 answer an earlier run got but did not score is kept; it is scored now by "
               "the judge, not asked for again" in n for n in state.notes), state.notes


def test_the_note_on_kept_answers_says_a_reference_gained_since_scores_them(
        tmp_path: Path) -> None:
    """Answers kept unscored (the run stopped while the judge held them) whose prompt has a
    reference now are scored against it, not judged, and the note says so."""
    out = tmp_path / "out.jsonl"
    jr.journal_path(out).write_text("\n".join([
        json.dumps(KEY.header()), _answered(0, "a"), _answered(0, "b"), _answered(1, "a"),
        ""]), encoding="utf-8")
    gained = [LabelPrompt(id="p0", prompt="Prompt 0?", reference="Rayleigh", line=1),
              *_prompts()[1:]]
    state = jr.inspect(out, gained, KEY)
    assert set(state.kept) == {("p0", "a"), ("p0", "b"), ("p1", "a")} and not state.rescored
    assert any("3 answers an earlier run got but did not score are kept; they are scored "
               "now, 1 by the judge and 2 against their prompt's reference, not asked for "
               "again" in n for n in state.notes), state.notes
    assert not any("judged" in n for n in state.notes), state.notes
    every = [LabelPrompt(id=p.id, prompt=p.prompt, reference="Rayleigh", line=p.line)
             for p in _prompts()]
    state = jr.inspect(out, every, KEY)
    assert any("3 answers an earlier run got but did not score are kept; they are scored "
               "now against their prompt's reference, not asked for again" in n
               for n in state.notes), state.notes
    state = jr.inspect(out, [every[1], *_prompts()[2:]], KEY)
    assert any("1 answer an earlier run got but did not score is kept; it is scored now "
               "against its prompt's reference, not asked for again" in n
               for n in state.notes), state.notes


def test_a_rerun_holds_where_each_kept_answer_is_not_the_answers(tmp_path: Path) -> None:
    """Reading a journal of 400 kept answers of 50 KB (20 MB) holds none of them: each is read
    when it is judged, checked again then (a line changed since is refused)."""
    out = tmp_path / "out.jsonl"
    prompts = _prompts(400)
    with jr.journal_path(out).open("w", encoding="utf-8") as fh:
        fh.write(json.dumps(KEY.header()) + "\n")
        for i, prompt in enumerate(prompts):
            line = jr.answer_line(prompt, "a", f"{i} " + "é" * 25_000, 0.001)
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    tracemalloc.start()
    try:
        state = jr.inspect(out, prompts, KEY)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(state.kept) == 400
    assert peak < 2 << 20, peak  # (a few lines' worth, however many the journal keeps)
    kept = state.kept[("p7", "a")]
    assert state.answer(("p7", "a"), kept) == "7 " + "é" * 25_000
    with pytest.raises(LabellingError, match=r"line 9 changed since this run read it .*; run "
                                             r"the same command again"):
        state.answer(("p8", "a"), kept)  # (another pair's place)
    text = jr.journal_path(out).read_text(encoding="utf-8")
    # (a change of the same length: the line stays where it was)
    jr.journal_path(out).write_text(text.replace('"cost_usd": 0.001', '"cost_usd": -0.01', 8),
                                    encoding="utf-8")
    with pytest.raises(LabellingError, match="line 9: 'cost_usd' is missing or out of range"):
        state.answer(("p7", "a"), kept)
    # A last line without its newline gets it (the repair), and is still read.
    jr.journal_path(out).write_text(json.dumps(KEY.header()) + "\n" + _answered(0, "a"),
                                    encoding="utf-8")
    state = jr.inspect(out, prompts, KEY)
    state.apply()
    assert jr.journal_path(out).read_text(encoding="utf-8").endswith("}\n")
    assert state.answer(("p0", "a"), state.kept[("p0", "a")]) == (
        "Because of Rayleigh scattering.")


@pytest.mark.parametrize("written", [_answered, _kept_on_failure])
def test_a_journalled_answer_of_another_run_or_tampered_is_refused(
        tmp_path: Path, written: Callable[[int, str], str]) -> None:
    out = tmp_path / "out.jsonl"
    journal = jr.journal_path(out)
    good = json.loads(written(0, "a"))
    changes: list[tuple[dict[str, object], str]] = [
        ({"model": "z"}, 'model "z" is not one of --models'),
        ({"id": None}, "'id' is missing or not a string"),
        ({"digest": 7}, "'digest' is missing or not a string"),
        ({"answer": 42}, "'answer' is missing or not a string"),
        ({"cost_usd": -1}, "'cost_usd' is missing or out of range"),
        ({"cost_usd": None}, "'cost_usd' is missing or out of range"),
        ({"cost_usd": True}, "'cost_usd' is missing or out of range"),
        ({"failed": "answer"}, 'kept only when the judge failed to score it, and this '
                               'failure is "answer"'),
        ({"answer": "\ud800"}, "the kept answer holds a lone surrogate")]
    for change, message in changes:
        journal.write_text(json.dumps(KEY.header()) + "\n" + json.dumps({**good, **change})
                           + "\n")
        before = journal.read_bytes()
        with pytest.raises(LabellingError) as info:
            jr.inspect(out, _prompts(), KEY)
        assert message in str(info.value) and "line 2" in str(info.value), str(info.value)
        assert "this is not a journal this command wrote" in str(info.value)
        assert journal.read_bytes() == before and not out.exists()


@pytest.mark.parametrize("stage", ["answer", "judge"])
def test_a_failure_line_of_another_run_or_tampered_is_refused(tmp_path: Path,
                                                               stage: str) -> None:
    # A failure's line without an answer was skipped unread: any object holding "failed"
    # passed, whatever its model, id or stage.
    out = tmp_path / "out.jsonl"
    journal = jr.journal_path(out)
    good = json.loads(_failed(0, "a", stage))
    journal.write_text(json.dumps(KEY.header()) + "\n" + json.dumps(good) + "\n")
    assert jr.inspect(out, _prompts(), KEY).kept == {}  # (as written: read, nothing kept)
    changes: list[tuple[dict[str, object], str]] = [
        ({"model": "z"}, 'model "z" is not one of --models'),
        ({"id": None}, "'id' is missing or not a string"),
        ({"digest": 7}, "'digest' is missing or not a string"),
        ({"failed": None}, "'failed' is missing or not a string"),
        ({"failed": "the disk"}, "'failed' is \"the disk\", neither \"answer\" nor \"judge\""),
        ({"error": ["boom"]}, "'error' is missing or not a string")]
    for change, message in changes:
        journal.write_text(json.dumps(KEY.header()) + "\n" + json.dumps({**good, **change})
                           + "\n")
        before = journal.read_bytes()
        with pytest.raises(LabellingError) as info:
            jr.inspect(out, _prompts(), KEY)
        assert message in str(info.value) and "line 2" in str(info.value), str(info.value)
        assert "this is not a journal this command wrote" in str(info.value)
        assert journal.read_bytes() == before and not out.exists()


def test_journalled_costs_are_kept_as_every_amount_of_dollars_is() -> None:
    """A cost is kept to the dollars' ten decimal places (catalog.usd), as the run's report
    and the gateway give it, not to a rule of its own (twelve significant digits kept
    0.00123456789012 and 3e-12), and reads back from its line as it was written."""
    prompt, cost, judged = _prompts(1)[0], 0.0012345678901234, 1e-12 + 2e-12
    line = jr.answer_line(prompt, "a", "x", cost)
    assert line is not None and line["cost_usd"] == 0.0012345679
    scored = jr.Scored(id=prompt.id, model="a", digest=prompt.digest, score=1.0,
                       cost_usd=cost, by="judge", judge_cost_usd=judged)
    assert (scored.cost_usd, scored.judge_cost_usd) == (0.0012345679, 0.0)
    again = json.loads(jr.encoded(scored.to_line()))
    assert jr.Scored(**again).to_line() == scored.to_line()
    assert jr.Kept(line=1, at=0, size=1, cost_usd=cost).cost_usd == 0.0012345679


def test_an_answer_too_long_for_a_journal_line_is_not_journalled(
        monkeypatch: pytest.MonkeyPatch) -> None:
    prompt = _prompts(1)[0]
    line = jr.answer_line(prompt, "a", "x" * 200, 0.5)
    assert line is not None and line["answer"] == "x" * 200 and line["cost_usd"] == 0.5
    fits = len(jr.encoded(line).encode("utf-8"))
    monkeypatch.setattr(jr, "MAX_LINE_BYTES", fits)
    assert jr.answer_line(prompt, "a", "x" * 200, 0.5) == line
    # (one more byte, in UTF-8: the line is measured as written, not in characters)
    assert jr.answer_line(prompt, "a", "x" * 199 + "é", 0.5) is None


def test_journal_answers_for_a_changed_prompt_are_not_reused(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    jr.journal_path(out).write_text(json.dumps(KEY.header()) + "\n" + _scored(1, "a") + "\n")
    changed = [_prompts()[0], LabelPrompt(id="p1", prompt="Another prompt", line=2)]
    state = jr.inspect(out, changed, KEY)
    assert state.scored == {}
    assert any("no longer in the prompts file (or changed since)" in n for n in state.notes)


def _by_reference(prompt: LabelPrompt, model: str, answer: str | None = "Paris",
                  score: float = 1.0, *, named: bool = True) -> str:
    """A score by reference as a run writes it (with its answer, and naming its reference), or
    as an earlier version wrote it (``named=False``: neither)."""
    scored = jr.Scored(id=prompt.id, model=model, digest=prompt.digest, score=score,
                       cost_usd=0.002, by="reference",
                       reference_digest=prompt.reference_digest if named else None)
    return json.dumps(jr.scored_line(scored, answer if named else None), ensure_ascii=False)


def test_a_score_stands_only_while_the_reference_it_was_made_against_is_unchanged(
        tmp_path: Path) -> None:
    """A score by reference is reused while the prompt's reference is the one it was made
    against; once that reference is changed, removed, or added to a judged prompt, the kept
    answer is scored again (its model not asked), or, when no answer was kept, asked for."""
    out = tmp_path / "out.jsonl"
    then = [LabelPrompt(id="p0", prompt="Capital of France?", reference="London", line=1),
            LabelPrompt(id="p1", prompt="Capital of Spain?", reference="Madrid", line=2),
            LabelPrompt(id="p2", prompt="Prompt 2?", line=3),
            LabelPrompt(id="p3", prompt="Capital of Italy?", reference="Rome", line=4)]
    jr.journal_path(out).write_text("\n".join([
        json.dumps(KEY.header()),
        _by_reference(then[0], "a", score=0.0), _by_reference(then[0], "b", "London"),
        _by_reference(then[1], "a", "Madrid"),
        _answered(2, "a", "Rayleigh"), _scored(2, "a", 0.25),
        _by_reference(then[3], "a", named=False),  # (an earlier version's line)
        _by_reference(then[3], "b", None),  # (an answer too long to keep with its score)
        ""]), encoding="utf-8")
    before = jr.journal_path(out).read_bytes()
    state = jr.inspect(out, then, KEY)  # nothing changed: every score stands
    assert set(state.scored) == {("p0", "a"), ("p0", "b"), ("p1", "a"), ("p2", "a"),
                                 ("p3", "a"), ("p3", "b")}
    assert state.kept == {} and state.rescored == set()
    now = [LabelPrompt(id="p0", prompt="Capital of France?", reference="Paris", line=1),
           LabelPrompt(id="p1", prompt="Capital of Spain?", line=2),
           LabelPrompt(id="p2", prompt="Prompt 2?", reference="Rayleigh", line=3),
           LabelPrompt(id="p3", prompt="Capital of Italy?", reference="Roma", line=4)]
    state = jr.inspect(out, now, KEY)
    assert jr.journal_path(out).read_bytes() == before  # (reading changes nothing)
    # p3/a: an earlier version's score names no reference and kept no answer: it stands.
    assert set(state.scored) == {("p3", "a")}
    assert state.rescored == {("p0", "a"), ("p0", "b"), ("p1", "a"), ("p2", "a")}
    assert set(state.kept) == state.rescored  # (p3/b kept no answer: asked for again)
    assert [(state.answer(pair, state.kept[pair]), state.kept[pair].cost_usd)
            for pair in (("p0", "b"), ("p2", "a"))] == [("London", 0.002), ("Rayleigh", 0.0021)]
    assert any("5 scores were made against a prompt's reference that changed since (or was "
               "added or removed): 4 kept answers scored again, not asked for again; 1 answer "
               "not kept, asked for again" in n for n in state.notes), state.notes
    assert not any("did not score" in n for n in state.notes), state.notes


def test_a_score_line_of_another_run_or_tampered_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    prompt = LabelPrompt(id="p0", prompt="Prompt 0?", reference="x", line=1)
    good = json.loads(_by_reference(prompt, "a"))
    changes: list[tuple[dict[str, object], str]] = [
            ({"by": "guess"}, "'by' is \"guess\", neither \"judge\" nor \"reference\""),
            ({"reference_digest": 7}, "'reference_digest' is not a string"),
            ({"by": "judge"}, "'reference_digest' is not a string on a score by reference"),
            ({"answer": 7}, "'answer' is missing or not a string")]
    for change, message in changes:
        jr.journal_path(out).write_text(json.dumps(KEY.header()) + "\n"
                                        + json.dumps({**good, **change}) + "\n")
        with pytest.raises(LabellingError) as info:
            jr.inspect(out, [prompt], KEY)
        assert message in str(info.value) and "line 2" in str(info.value), str(info.value)


@pytest.mark.parametrize(("key", "message"), [
    (jr.RunKey(models=("a", "c"), judge="j", rubric="r1"), "--models a,b then, a,c now"),
    (jr.RunKey(models=("a", "b"), judge="k", rubric="r1"), "--judge j then, k now"),
    (jr.RunKey(models=("a", "b"), judge="j", rubric="r2"), "--rubric (another rubric then)"),
    (jr.RunKey(models=("a", "b"), judge="j", rubric="r1", max_tokens=64),
     "--max-tokens (none) then, 64 now"),
])
def test_a_journal_of_other_settings_is_refused(tmp_path: Path, key: jr.RunKey,
                                                message: str) -> None:
    out = tmp_path / "out.jsonl"
    jr.journal_path(out).write_text(json.dumps(KEY.header()) + "\n")
    with pytest.raises(LabellingError, match="other settings") as info:
        jr.inspect(out, _prompts(), key)
    assert message in str(info.value) and "--restart" in str(info.value)


UNJUDGED = jr.RunKey(models=("a", "b"))  # (every prompt had a reference)


def test_a_header_that_named_no_judge_gains_one_and_refuses_any_other(tmp_path: Path) -> None:
    """A journal begun when every prompt had a reference names no judge: a rerun that needs
    one (a reference removed since) resumes and appends the header with its judge; from then
    on a run with another judge is refused as with any other setting. One with none is read
    (whether it needs a judge is the run's to say), the header's judge kept."""
    out = tmp_path / "out.jsonl"
    then = [LabelPrompt(id="p0", prompt="Capital of France?", reference="Paris", line=1),
            LabelPrompt(id="p1", prompt="Capital of Spain?", reference="Madrid", line=2)]
    journal = jr.journal_path(out)
    journal.write_text(json.dumps(UNJUDGED.header()) + "\n" + _by_reference(then[0], "a")
                       + "\n", encoding="utf-8")
    assert not jr.inspect(out, then, UNJUDGED).header_needed  # (the same settings)
    now = [then[0], LabelPrompt(id="p1", prompt="Capital of Spain?", line=2)]
    state = jr.inspect(out, now, KEY)
    assert state.journal_has_header and state.journal_judge is None and state.header_needed
    assert set(state.scored) == {("p0", "a")}
    # (as the run appends it, before its first line)
    journal.write_text(journal.read_text(encoding="utf-8") + json.dumps(KEY.header()) + "\n",
                       encoding="utf-8")
    state = jr.inspect(out, now, KEY)
    assert state.journal_judge == "j" and not state.header_needed
    assert set(state.scored) == {("p0", "a")}
    with pytest.raises(LabellingError, match="other settings") as info:
        jr.inspect(out, then, jr.RunKey(models=("a", "b"), judge="k", rubric="r1"))
    assert "--judge j then, k now" in str(info.value) and "--restart" in str(info.value)
    state = jr.inspect(out, then, UNJUDGED)
    assert state.journal_judge == "j" and not state.header_needed
    assert set(state.scored) == {("p0", "a")}


def test_a_header_that_names_a_judge_is_read_by_a_run_without_one(tmp_path: Path) -> None:
    """Every prompt has a reference now: a run without a judge resumes the journal of one
    that had a judge (it was refused: "--judge j then, (none) now"), appends no header, and
    keeps the judged score only where it still stands (none: every prompt has a reference,
    so the kept answer is scored again against it)."""
    out = tmp_path / "out.jsonl"
    then = [LabelPrompt(id="p0", prompt="Capital of France?", line=1),
            LabelPrompt(id="p1", prompt="Capital of Spain?", reference="Madrid", line=2)]
    answer = jr.answer_line(then[0], "a", "Paris.", 0.001)
    judged = jr.Scored(id="p0", model="a", digest=then[0].digest, score=0.9, cost_usd=0.001,
                       by="judge", judge_cost_usd=0.0001)
    jr.journal_path(out).write_text(
        json.dumps(KEY.header()) + "\n" + json.dumps(answer) + "\n"
        + json.dumps(jr.scored_line(judged)) + "\n" + _by_reference(then[1], "a") + "\n",
        encoding="utf-8")
    assert not jr.inspect(out, then, KEY).rescored  # (the judge's score stands)
    now = [LabelPrompt(id="p0", prompt="Capital of France?", reference="Paris", line=1),
           then[1]]
    state = jr.inspect(out, now, UNJUDGED)
    assert state.journal_judge == "j" and not state.header_needed
    assert set(state.scored) == {("p1", "a")} and state.rescored == {("p0", "a")}


@pytest.mark.parametrize(("first", "change", "message"), [
    (KEY, {}, "another header, though the header names a judge already"),
    (UNJUDGED, {"models": ["a", "c"]}, "with other models or max_tokens than it"),
    (UNJUDGED, {"max_tokens": 64}, "with other models or max_tokens than it"),
    (UNJUDGED, {"judge": None, "rubric": None}, "names no judge and its rubric"),
    (UNJUDGED, {"judge": 7}, "names no judge and its rubric"),
    (UNJUDGED, {"labelling_journal": 2}, "other fields than the first's"),
    (UNJUDGED, {"extra": 1}, "other fields than the first's"),
])
def test_a_header_after_the_first_that_only_adds_no_judge_is_refused(
        tmp_path: Path, first: jr.RunKey, change: dict[str, object], message: str) -> None:
    out = tmp_path / "out.jsonl"
    jr.journal_path(out).write_text(json.dumps(first.header()) + "\n"
                                    + json.dumps({**KEY.header(), **change}) + "\n")
    with pytest.raises(LabellingError) as info:
        jr.inspect(out, _prompts(), KEY)
    assert (message in str(info.value) and "line 2" in str(info.value)
            and "not a journal this command wrote" in str(info.value)), str(info.value)


def test_the_same_models_in_another_order_resume(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    jr.journal_path(out).write_text(json.dumps(KEY.header()) + "\n" + _scored(1, "a") + "\n")
    again = jr.RunKey(models=("b", "a"), judge="j", rubric="r1")
    assert set(jr.inspect(out, _prompts(), again).scored) == {("p1", "a")}


@pytest.mark.parametrize(("content", "message"), [
    (_record(7) + "\n", 'id "p7", which is not in the prompts file'),
    (_record(0, ("a",)) + "\n", 'labels "a", not the models asked for ("a", "b")'),
    (_record(0, ("a", "b", "c")) + "\n", 'labels "a", "b", "c", not the models asked for'),
    (_record(0).replace("Prompt 0?", "Other") + "\n", "another prompt than line 1"),
    ("not json\n" + _record(0) + "\n", "line 1: not valid JSON"),
    (_record(0) + "\n" + _record(0) + "\n", 'duplicate id "p0"'),
])
def test_an_output_that_is_not_this_runs_is_refused(tmp_path: Path, content: str,
                                                    message: str) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(content)
    with pytest.raises(LabellingError) as info:
        jr.inspect(out, _prompts(), KEY)
    # No journal beside it: it may be anyone's file, so --restart (which deletes it) is not
    # offered.
    assert message in str(info.value) and jr.FOREIGN_HINT in str(info.value)
    assert "--restart" not in str(info.value)
    assert out.read_text() == content
    # With this command's journal beside it, it is a run of its own: --restart is offered.
    jr.journal_path(out).write_text(json.dumps(KEY.header()) + "\n")
    with pytest.raises(LabellingError) as info:
        jr.inspect(out, _prompts(), KEY)
    assert message in str(info.value) and jr.RESTART_HINT in str(info.value)


def test_a_file_that_is_not_text_or_not_a_journal_is_not_offered_for_restart(
        tmp_path: Path) -> None:
    out = tmp_path / "photo.jpg"
    out.write_bytes(b"\xff\xd8\xff\xe0 binary\n")
    with pytest.raises(LabellingError, match="not UTF-8 text") as info:
        jr.inspect(out, _prompts(), KEY)
    assert jr.FOREIGN_HINT in str(info.value) and "--restart" not in str(info.value)
    out = tmp_path / "out.jsonl"
    jr.journal_path(out).write_text("someone's notes\n")
    with pytest.raises(LabellingError, match="not a JSON object") as info:
        jr.inspect(out, _prompts(), KEY)
    assert "--restart" not in str(info.value)


@pytest.mark.parametrize("journal", ["someone's notes\n", '{"id": "p0"}\n', "\n",
                                     '{"labelling_journal": 2}\n', "notes, unfinished"])
def test_a_file_at_the_journals_name_that_is_not_one_makes_nothing_this_commands(
        tmp_path: Path, journal: str) -> None:
    # Any file there was taken for this command's journal: the refusal said the file "may be
    # someone else's: it is left as it is", yet --restart deleted it, and the --out beside it.
    out = tmp_path / "out.jsonl"
    out.write_text(_record(0) + "\n")
    jr.journal_path(out).write_text(journal)
    assert not jr.written_here(out)
    for _ in ("with --out", "without it"):
        with pytest.raises(LabellingError) as info:
            jr.check_discardable(out)
        assert str(info.value).startswith(f"{str(jr.journal_path(out))!r}: --restart discards "
                                          "only a journal this command began"), info.value
        assert jr.FOREIGN_HINT in str(info.value)
        assert jr.journal_path(out).read_text() == journal
        if out.exists():
            assert out.read_text() == _record(0) + "\n"
            out.unlink()


@pytest.mark.parametrize("journal", ["", json.dumps(KEY.header()) + "\n",
                                     json.dumps(KEY.header())[:7],
                                     json.dumps(KEY.header())[:40]])
def test_a_journal_this_command_began_makes_its_output_its_own(tmp_path: Path,
                                                               journal: str) -> None:
    """Made and killed before its header was written, or part-way through writing it."""
    out = tmp_path / "out.jsonl"
    out.write_text("not a record\n")
    jr.journal_path(out).write_text(journal)
    assert jr.written_here(out)
    jr.check_discardable(out)


def test_a_journal_that_is_not_one_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    journal = jr.journal_path(out)
    journal.write_text('{"id": "p0"}\n')
    with pytest.raises(LabellingError, match="not a labelling journal's header"):
        jr.inspect(out, _prompts(), KEY)
    journal.write_text(json.dumps(KEY.header()) + '\n{"id": "p0", "model": "a"}\n')
    with pytest.raises(LabellingError, match="line 2: 'digest' is missing"):
        jr.inspect(out, _prompts(), KEY)
    journal.write_text(json.dumps(KEY.header()) + "\n" + _scored(0, "z") + "\n")
    with pytest.raises(LabellingError, match='model "z" is not one of --models'):
        jr.inspect(out, _prompts(), KEY)
    huge = json.loads(_scored(0, "a"))
    huge["cost_usd"] = 10**400
    journal.write_text(json.dumps(KEY.header()) + "\n" + json.dumps(huge) + "\n")
    with pytest.raises(LabellingError, match="line 2: 'cost_usd' is missing or out of range"):
        jr.inspect(out, _prompts(), KEY)
    journal.write_text(json.dumps(KEY.header()) + '\n{"id": 1' + "0" * 5000 + "}\n")
    with pytest.raises(LabellingError, match="line 2 is not a JSON object"):
        jr.inspect(out, _prompts(), KEY)

def _huge(path: Path, first: bytes, size: int = 4 << 30) -> None:
    """``first``, then zeros up to ``size`` bytes (a sparse file: no disk taken)."""
    with path.open("wb") as fh:
        fh.write(first)
        fh.truncate(size)


def test_a_huge_file_of_someone_elses_is_refused_at_its_first_line_unread(
        tmp_path: Path) -> None:
    out = tmp_path / "disk.img"
    _huge(out, b"my notes\n")
    journal_dir = tmp_path / "j"
    journal_dir.mkdir()
    theirs = journal_dir / "out.jsonl"
    _huge(jr.journal_path(theirs), b"my notes\n")
    tracemalloc.start()
    try:
        with pytest.raises(LabellingError, match="line 1: not valid JSON"):
            jr.inspect(out, _prompts(), KEY)
        with pytest.raises(LabellingError, match="this is not one"):
            jr.check_discardable(out)
        with pytest.raises(LabellingError, match="line 1 is not a JSON object"):
            jr.inspect(theirs, _prompts(), KEY)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # the 4 GiB files were not read whole
    assert out.stat().st_size == 4 << 30


def test_a_long_records_file_of_other_prompts_is_refused_past_the_prompts_count(
        tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("\n" + "".join(_record(i) + "\n" for i in range(5)))
    with pytest.raises(LabellingError) as info:
        jr.inspect(out, _prompts(), KEY)
    assert "line 5: holds more records than the prompts file has prompts (3)" in str(info.value)
    assert jr.FOREIGN_HINT in str(info.value)


def test_a_line_past_the_bound_is_refused_once_that_much_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jr, "MAX_LINE_BYTES", 1000)
    out = tmp_path / "out.jsonl"
    out.write_text(_record(0) + "\n" + "x" * 5000 + "\n")
    with pytest.raises(LabellingError) as info:
        jr.inspect(out, _prompts(), KEY)
    assert "line 2 is over 1,000 bytes" in str(info.value) and jr.FOREIGN_HINT in str(info.value)
    other = tmp_path / "other.jsonl"
    jr.journal_path(other).write_text(json.dumps(KEY.header()) + "\n" + "{" * 2000 + "\n")
    with pytest.raises(LabellingError, match="line 2 is over 1,000 bytes"):
        jr.inspect(other, _prompts(), KEY)


def test_a_record_whose_prompt_holds_unicode_line_breaks_is_resumed(tmp_path: Path) -> None:
    prompts = [LabelPrompt(id="p0", prompt="one\u2028two\x85three\x1cfour", line=1)]
    out = tmp_path / "out.jsonl"
    writer = jr.LineWriter(out)
    writer.append({"id": "p0", "prompt": prompts[0].prompt, "scores": {"a": 1.0, "b": 0.0},
                   "costs": {"a": 0.001, "b": 0.002}})
    writer.close()
    state = jr.inspect(out, prompts, KEY)
    assert state.done == {"p0"} and state.score_sums == {"a": 1.0, "b": 0.0}


def test_lines_are_appended_whole(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "out.jsonl"
    writer = jr.LineWriter(path)
    writer.append({"a": "é"})
    writer.append({"b": 2})
    writer.close()
    assert path.read_text(encoding="utf-8") == '{"a": "é"}\n{"b": 2}\n'
    with pytest.raises(LabellingError, match="is closed"):
        writer.append({"c": 3})


@pytest.mark.parametrize("under", ["out.jsonl", "deeper/out.jsonl"])
def test_a_file_where_a_directory_should_be_is_named(tmp_path: Path, under: str) -> None:
    taken = tmp_path / "rec.jsonl"
    taken.write_text("x\n")
    with pytest.raises(LabellingError) as info:
        jr.LineWriter(taken / under)
    reason = (f"its parent '{taken}' is not a directory" if under == "out.jsonl"
              else f"its path goes through '{taken}', which is not a directory")
    assert f"cannot open it for writing: {reason}" in str(info.value)
    assert taken.read_text() == "x\n"


def test_one_run_at_a_time_holds_the_outputs_lock(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with OutputLock(out):
        assert lock_path(out).read_text() == f"{os.getpid()}\n"
        with pytest.raises(LabellingError) as info:
            OutputLock(out).acquire()
        assert str(info.value) == (f"another label run is writing {out} (pid {os.getpid()}); "
                                   "wait for it to finish, or write to another --out")
    assert not lock_path(out).exists()  # released and removed
    with OutputLock(out):
        pass
    lock_path(out).write_text("4242\n")  # left by a run that crashed: not held by anyone
    with OutputLock(out):
        assert lock_path(out).read_text() == f"{os.getpid()}\n"


def test_a_lock_path_holding_someone_elses_file_is_never_emptied(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    mine = lock_path(out)
    mine.write_text("my notes, not a lock\n")
    with pytest.raises(LabellingError, match="is not a label run's lock file"):
        OutputLock(out).acquire()
    assert mine.read_text() == "my notes, not a lock\n"
    mine.unlink()
    precious = tmp_path / "precious.txt"
    precious.write_text("keep\n")
    mine.symlink_to(precious)  # planted: must not be followed
    with pytest.raises(LabellingError, match="symbolic link"):
        OutputLock(out).acquire()
    assert precious.read_text() == "keep\n"


def test_a_records_line_is_measured_as_written_at_its_widest() -> None:
    from switchpoint.records import MAX_RECORD_CHARS

    models = ["a", "model \"b\""]
    prompt = LabelPrompt(id="p\x01", prompt='say "hi"\\\n\x00 caf\xe9 \u2028', task="t",
                         split="train", line=1)
    widest = 2.2250738585072014e-308
    assert all(len(repr(x)) <= len(repr(widest)) for x in (
        0.1 + 0.2, 1 / 3, 5e-324, 1.2345678901234567e-300, 0.00012345678901234567))
    record = jr.record_line(prompt, {}, [])
    record["scores"] = record["costs"] = dict.fromkeys(models, widest)
    line = jr.encoded(record)
    assert jr.record_chars(models)(prompt) == len(line)
    small = jr.Scored(id="p\x01", model="a", digest="d", score=1.0, cost_usd=0.0, by="judge")
    assert len(jr.encoded(jr.record_line(prompt, {m: small for m in models}, models))) < len(
        line)
    # The output is read with the same bound in bytes: 4 UTF-8 bytes a character at most.
    assert jr.MAX_LINE_BYTES == 4 * MAX_RECORD_CHARS


def test_an_output_line_longer_than_fit_reads_is_not_resumed(tmp_path: Path) -> None:
    # Within the bytes the output is read with, but past the characters a records line holds.
    from switchpoint.records import MAX_RECORD_CHARS

    prompt = "p" * MAX_RECORD_CHARS
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "p0", "prompt": prompt, "scores": {"a": 0.5, "b": 0.5},
                               "costs": {"a": 0.0, "b": 0.0}}) + "\n", encoding="utf-8")
    with pytest.raises(LabellingError) as info:
        jr.inspect(out, [LabelPrompt(id="p0", prompt=prompt, line=1)], KEY)
    assert str(info.value).startswith(f"'{out}', line 1: is over 16,777,216 characters; a "
                                      "record is one line of JSON; it is not a records file")
