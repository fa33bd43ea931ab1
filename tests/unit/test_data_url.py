"""Reading a data URL's header: media type, parameters skipped, base64, where data begins."""

from __future__ import annotations

import pytest

from switchpoint.gateway.data_url import MAX_HEADER, DataURL, parse_data_url


@pytest.mark.parametrize(("url", "read"), [
    ("data:image/png;base64,iVBOR", ("image/png", True)),
    ("DATA:Image/PNG;name=a.png;charset=x;BASE64,iVBOR", ("image/png", True)),
    ("data:image/svg+xml,<svg/>", ("image/svg+xml", False)),
    ("data:image/png;base64=no,AA", ("image/png", False)),
    ("data:,hello", ("", False)),
    ("data:;base64,aGk=", ("", True)),
    ("data:image/png;base64", ("", False)),
], ids=["plain", "parameters-and-case", "not-base64", "base64-as-parameter", "no-header",
       "base64-without-type", "no-comma"])
def test_the_header_is_read(url: str, read: tuple[str, bool]) -> None:
    header = parse_data_url(url)
    assert header is not None and (header.media_type, header.base64) == read
    # The data begins after the first comma (none: no data).
    comma = url.find(",")
    assert header.data_at == (comma + 1 if comma >= 0 else -1)


def test_only_data_urls_are_read_and_only_a_bounded_header() -> None:
    assert parse_data_url("https://x.test/a.png") is None
    assert parse_data_url("dat") is None
    long_header = "data:image/png;" + "p=1;" * MAX_HEADER + "base64,AA"
    assert parse_data_url(long_header) == DataURL("", False, -1)
