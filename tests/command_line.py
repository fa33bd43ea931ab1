"""The command line run in this process, as the tests of its commands call it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from switchpoint.cli import main


def run(argv: Sequence[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``switchpoint ARGV`` (each item as its ``str``): its exit code and what it printed to
    stdout and stderr."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_refused_option(argv: Sequence[object], capsys: pytest.CaptureFixture[str]
                       ) -> tuple[int, str, str]:
    """:func:`run`, for a value an option's type refuses: argparse prints the error and exits
    (it must)."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return int(str(info.value.code)), out, err
