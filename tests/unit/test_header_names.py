"""The request headers the service reads are named in one place, and one written with
underscores for its dashes is refused by name (the rule alone; over a socket:
tests/attack/test_attack_underscore_headers.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from switchpoint.server.header_names import READ
from switchpoint.server.underscores import guard

SERVER = Path(__file__).resolve().parents[2] / "src" / "switchpoint" / "server"
# Where a module of the server reads a request header by a name written in place.
_READS = re.compile(r'(?:getlist|header_rule)\(\s*"([^"]+)"|(?:name|key) == b"([^"]+)"'
                    r'|b"([^"]+)" in names')


def test_every_header_the_server_reads_is_one_the_names_list() -> None:
    # A header read by a name written in place, not listed, would pass its underscored
    # spelling unrefused.
    named = {found for path in SERVER.rglob("*.py")
             for match in _READS.finditer(path.read_text(encoding="utf-8"))
             for found in match.groups() if found}
    assert named, "the pattern finds the reads"  # (protocol.py reads the framing so)
    assert named <= READ, sorted(named - READ)


def _scope(*names: bytes) -> dict[str, object]:
    return {"type": "http", "headers": [(b"host", b"127.0.0.1"),
                                        *((name, b"sk-secret-value") for name in names)]}


@pytest.mark.parametrize(("sent", "dashed"), [
    (b"x_session_id", "x-session-id"), (b"x-session_id", "x-session-id"),
    (b"content_length", "content-length"), (b"x_forwarded_for", "x-forwarded-for"),
    (b"access_control_request_method", "access-control-request-method")])
def test_a_header_the_service_reads_with_underscores_is_refused_by_name(
        sent: bytes, dashed: str) -> None:
    scope = _scope(b"x-session-id", sent)
    read, refused = guard(scope)
    assert read is scope and refused is not None
    assert (refused.status, refused.code, refused.param) == (400, "invalid_request",
                                                             sent.decode())
    assert f"write it {dashed}, with dashes" in refused.message
    assert "sk-secret-value" not in refused.message


@pytest.mark.parametrize("names", [(), (b"x-session-id",), (b"x_trace_id", b"x_api_key"),
                                   (b"authorization", b"my_header")])
def test_other_headers_pass_untouched(names: tuple[bytes, ...]) -> None:
    scope = _scope(*names)
    assert guard(scope) == (scope, None)
