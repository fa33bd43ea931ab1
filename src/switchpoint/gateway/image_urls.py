"""What an ``image_url`` part's ``url`` may be, whichever model answers: what OpenAI's Chat
Completions API takes, an http(s) URL naming a host (which the model's provider fetches) or a
``data:`` URL whose header ends in a comma and whose data, when the header says base64, is
base64 (:mod:`~switchpoint.gateway.data_url`).

Every other scheme (``file:``, ``ftp:``, ...) is refused when the request is read, before any
model is chosen: no provider fetches it, and a wire that would send it on as a URL image gets
it refused after the budget hold. What a wire takes beyond this rule (the Anthropic Messages
API takes base64 data URLs of a few image types only) is that wire's limit
(:data:`~switchpoint.gateway.capabilities.WIRE_LIMITS`), which leaves its models out.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from switchpoint._messages import cut, json_quoted
from switchpoint._redact import redact_url
from switchpoint.gateway.data_url import BASE64_WRITTEN, base64_problem, parse_data_url

# The schemes of a URL a provider fetches an image from.
WEB_SCHEMES = ("http", "https")
WRITTEN = ("an image is given by an http(s) URL or by a data URL such as "
           f"data:image/png;base64,<data> ({BASE64_WRITTEN})")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# Characters of a refused URL read for the secrets it may hold before its first ones are quoted.
_REDACTED_READ = 512


def _scheme(url: str) -> str | None:
    """The scheme of ``url``, lower-cased (None when it has none)."""
    found = _SCHEME.match(url)
    return found.group(1).lower() if found else None


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # (a malformed bracketed host, a bad port)
        return None


def is_web_url(url: str) -> bool:
    """Whether ``url`` is an http(s) URL naming a host (one a provider can fetch)."""
    return _scheme(url) in WEB_SCHEMES and bool(_host(url))


def image_url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as an image's URL, and how to give the image (None when
    nothing is)."""
    header = parse_data_url(url)
    if header is not None:
        if header.data_at < 0:
            return f"is a data URL that has no comma ending its header; {WRITTEN}"
        if not header.base64:
            return None  # (text data: a wire's own limits say whether it takes it)
        problem = base64_problem(url[header.data_at:])
        return None if problem is None else f"is a data URL: its base64 data {problem}; {WRITTEN}"
    scheme = _scheme(url)
    if scheme is None:
        return f"has no scheme ({_shown(url)}); {WRITTEN}"
    if scheme not in WEB_SCHEMES:
        return f"uses the {cut(scheme, 20)} scheme, which no provider fetches; {WRITTEN}"
    if not _host(url):
        return f"names no host ({_shown(url)}); {WRITTEN}"
    return None


def _shown(url: str) -> str:
    """``url`` as an error quotes it: cut short, a password in it (``user:...@``) or a
    credential in its query redacted (errors are logged)."""
    return json_quoted(redact_url(url[:_REDACTED_READ]), 40)
