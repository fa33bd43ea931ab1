"""Labelling a team's own models: answers from each model, scored by a judge or a reference
answer, written as routing records (with the answers' real costs) that ``fit`` and
``add-model`` take::

    from switchpoint.labelling import label

    report = label("prompts.jsonl", ["mine-small", "mine-large"], "records.jsonl",
                   judge="grader", config="switchpoint.yaml", concurrency=4)
    print(report.summary())

:func:`alabel` is the async form. The pieces are usable alone: :class:`Judge` (the rubric and
the strict reply protocol, :func:`parse_judge_reply`), :func:`reference_score`, and
:func:`read_prompts`.
"""

from switchpoint.labelling.judge import CONTRACT, DEFAULT_RUBRIC, Judge, parse_judge_reply
from switchpoint.labelling.prompts import LabelPrompt, parse_prompts, read_prompts
from switchpoint.labelling.reference import reference_score
from switchpoint.labelling.run import (
    DEFAULT_CONCURRENCY,
    MAX_CONCURRENCY,
    LabelFailure,
    LabelReport,
    alabel,
    label,
)

__all__ = [
    "CONTRACT",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_RUBRIC",
    "MAX_CONCURRENCY",
    "Judge",
    "LabelFailure",
    "LabelPrompt",
    "LabelReport",
    "alabel",
    "label",
    "parse_judge_reply",
    "parse_prompts",
    "read_prompts",
    "reference_score",
]
