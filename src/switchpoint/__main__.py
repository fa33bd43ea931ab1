"""``python -m switchpoint``: the command line, as the ``switchpoint`` command runs it (for an
environment whose scripts folder is not on ``PATH``)."""

from __future__ import annotations

if __name__ == "__main__":
    from switchpoint.cli import main

    raise SystemExit(main())
