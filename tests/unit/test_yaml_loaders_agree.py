"""The config's YAML reads alike through libyaml and through the pure-Python loader.

The config parses its YAML (a file's, a variable's) with libyaml where PyYAML has it, and
with PyYAML's pure-Python loader otherwise (or where libyaml refuses a text, or reads it
otherwise than YAML does). Each short text below, built at random from the pieces where the
two were found to differ (tabs, ``?``, tags, byte order marks, flow collections, quotes,
comments, block scalars, numbers, dates, nulls, line breaks, indentation), must give the
same value through both, or be refused by both. The seed is fixed, so a failure names its
texts and reproduces.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import yaml

from switchpoint import config

#: The pieces a text is built of.
_PIECES = (
    "\t", "?", "? ", "?\t", "?,", "!", "! ", "!!str ", "!!str", "!!int ", "!!float ", "!<!> ",
    "!foo ", "!e!x ", "\ufeff", "{", "}", "[", "]", "{}", "[]", ", ", ",", "'", '"', "'' ",
    '"\\ufeff"', '"\\x41"', "#", " # c", "\t#", "  #", "\n#x\n", ">", "|", "|-", ">+", "|2",
    ": ", ":", ":\t", "- ", "-", "-\t", "a: ", "\n  a: ", "\n- a: ", "1", "07", "0x1F",
    "1_000", "1.5", "-.5", "1e3", ".inf", ".NaN", "10:11:12", "2021-02-03",
    "2021-02-03 04:05:06", "2021-02-03T04:05:06Z", "2021-02-30", "null", "~", "true", "no",
    "a", "key", "b c", "\n", "\r\n", "\r", " ", "  ", "\n  ", "\n    ", "\n- ", "&a ", "*a",
    "<<: ", "\n...\n", "---", "--- ", "%YAML 1.2\n---\n", "%TAG !e! tag:x,2000:\n---\n", "=",
    "%", "@", "`", "\\", "é", "\U0001f600",
)
#: Pieces a text is seldom built of (most texts holding one are refused by both loaders).
_RARE = ("\x85", "\u2028", "\x00", "\x7f", "\ud800", "\t", "\ufeff", "%YAML 1.2\n---\n",
         "%TAG !e! tag:x,2000:\n---\n", "\n...\n", "\r")
_INDENTS = ("", "", "", "", "  ", "\t", " \t")
_LEADS = ("", "", "", "", "- ", "? ", "-\t")
_KEYS = ("a", "b", "c", "d", "e", "'k'", '"k"', "!!str a", "! a", "1", "?a", "a?b", "[a]",
         "{a: 1}", "")
_COLONS = (": ", ": ", ": ", ":\t", ":", " : ", "")
_COMMENTS = ("", "", " #c", "\t#c", "#c")

#: How many texts are read (some 2 s through both loaders), and the seed they are drawn by.
_COUNT = 10_000
_SEED = 20261207


def _piece(rng: random.Random) -> str:
    return rng.choice(_RARE if rng.random() < 0.05 else _PIECES)


def _line(rng: random.Random, indent: str, lead: str) -> str:
    """A line as a config writes one (indentation, a key, its colon, a value, a comment),
    each part drawn from those where the loaders differed; most lines of a text keep its
    ``indent`` and ``lead`` (a text whose lines each start anywhere is refused by both)."""
    if rng.random() < 0.2:
        indent, lead = rng.choice(_INDENTS), rng.choice(_LEADS)
    value = _piece(rng) + (_piece(rng) if rng.random() < 0.3 else "")
    return (indent + lead + rng.choice(_KEYS) + rng.choice(_COLONS) + value
            + rng.choice(_COMMENTS))


def _texts(seed: int, count: int) -> Iterator[str]:
    """``count`` short texts: half of them lines shaped as a config's (some after a byte
    order mark), half any pieces."""
    rng = random.Random(seed)
    for _ in range(count):
        if rng.random() < 0.5:
            indent, lead = rng.choice(("", "", "  ")), rng.choice(_LEADS)
            lines = (_line(rng, indent, lead) for _ in range(rng.randint(1, 4)))
            mark = rng.choice(("", "", "", "", "\ufeff"))  # (a byte order mark at the start)
            yield mark + "\n".join(lines) + rng.choice(("", "\n"))
        else:
            yield "".join(_piece(rng) for _ in range(rng.randint(1, 8)))


def _reading(text: str) -> str:
    """What the config's parsing makes of ``text``: its value (its repr, so that 1, 1.0 and
    True, or a NaN, compare as what they are), that it is refused, or what else it raised."""
    try:
        return repr(config._parse_yaml(text))
    except (yaml.YAMLError, RecursionError):
        return "refused"
    except Exception as exc:  # (any other exception is a traceback a user would see)
        return f"raised {type(exc).__name__}: {exc}"


def test_the_two_yaml_loaders_read_every_text_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = config._FastUniqueKeyLoader
    if fast is None:
        pytest.skip("PyYAML here is built without libyaml: the config has one YAML loader")
    differences: list[str] = []
    outcomes = {"value": 0, "refused": 0}
    for text in _texts(_SEED, _COUNT):
        monkeypatch.setattr(config, "_FastUniqueKeyLoader", fast)
        with_libyaml = _reading(text)
        monkeypatch.setattr(config, "_FastUniqueKeyLoader", None)
        pure = _reading(text)
        outcomes["refused" if pure == "refused" else "value"] += 1
        if with_libyaml != pure or pure.startswith("raised "):
            differences.append(f"{text!r}: libyaml {with_libyaml}; pure Python {pure}")
    assert not differences, (f"{len(differences)} of {_COUNT} texts read otherwise (seed "
                             f"{_SEED}):\n" + "\n".join(differences[:20]))
    # (the texts exercise both outcomes: a generator that only made refused texts tests little)
    assert min(outcomes.values()) > _COUNT // 10, outcomes


def test_the_texts_are_the_same_for_a_seed() -> None:
    """(a failure names texts that the same seed draws again)"""
    assert list(_texts(_SEED, 50)) == list(_texts(_SEED, 50))
    assert list(_texts(_SEED, 50)) != list(_texts(_SEED + 1, 50))
