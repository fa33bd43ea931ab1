"""Secrets out of upstream text: nothing an upstream says reaches a client, the log or the store
with a key in it.

An upstream's error body may quote the request it refused, ``Authorization`` header included.
Every upstream text that enters switchpoint (error bodies and messages, malformed chunks,
protocol errors) goes through :func:`redact` first, where the provider errors are built
(:mod:`switchpoint.gateway.providers.base`), so a :class:`~switchpoint.errors.ProviderError`'s
message and body are clean wherever they travel. It replaces:

- every secret switchpoint knows: the API keys it sent (each key is remembered when a provider
  reads it from the variable the catalog names, see :func:`remember`) and the admin token;
- anything shaped like a credential: ``Bearer``/``Basic`` tokens, ``sk-...`` keys (OpenAI,
  Anthropic's ``sk-ant-...``, project keys), switchpoint's own client keys (``sp-<id>_...``:
  the id, which is not secret, stays), other vendors' key prefixes, and the value after
  ``x-api-key``, ``api_key``, ``authorization``, ``token``, ``secret`` or ``password``, and
  a URL's password (``https://user:...@host``), or its user when it has no password or an
  empty one (``https://...@host``, ``https://...:@host``: a token sent as the user, as some
  proxies and hosts take one).

A URL (a request line, its path and query) may carry a secret percent-encoded (``%5F`` for the
``_`` of a key, ``api%5Fkey=``), which no pattern matches as written: :func:`redact_url`
decodes it first, a few rounds at most. In a query a credential is often named by a word too
plain to redact in free text (``?key=...``, ``?token=...``, ``?auth=...``, ``?sig=...``):
:func:`redact_url` redacts the value of every query parameter whose name is, or ends in, such
a word (``key``, ``token``, ``auth``, ``secret``, ``password``, ``signature``, ``session``,
``credential``; ``client_key``, ``auth_token`` too).

A model's ``base_url`` may carry a secret the same ways (``https://user:password@host``,
``https://token@host``, ``?key=...``): :func:`url_secrets` finds them, and a catalog
remembers each (see :func:`remember`) as it is made, so every text that quotes them (an
upstream's error, a connection error, a log line) is redacted as an API key's is, and
:func:`redact_url` masks them where a URL itself is shown (a model card's repr, a redirect's
target). A harmless parameter (``api-version``) is shown as written.

Redaction is for text that is not the answer: a completed answer's content goes to the client
untouched.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

MASK = "[REDACTED]"
# Known secrets shorter than this are not searched for (they would match ordinary words).
MIN_SECRET = 8
# The most secrets remembered (a key rotated many times: the oldest are forgotten first).
MAX_SECRETS = 256
# How deep a JSON body is walked (an error body nests a few levels).
MAX_DEPTH = 32
# Rounds of percent-decoding a URL gets before redaction (a secret encoded twice, %255F, is
# found too), and the most of a URL kept (the rest is cut, not searched).
MAX_URL_DECODES = 3
MAX_URL = 16_384
# What stays unencoded when a redacted URL is encoded again (readable, and never a control
# character or a space).
_URL_SAFE = "/?&=:;,@!$'()*+~[]"

# Where a key-shaped string may begin: not inside a word (``risk-assessment``, ``flask-admin``,
# ``xsk-...`` are no keys), but right after what only glues a key to the text before it in
# the forms a key is really written: an authorization scheme with its space left out
# (``Bearersk-...``, as a header built by ``"Bearer" + key`` sends it), an escape of a text
# quoted as JSON (``"line\nsk-..."``, a tab, ``\u0022``) and a percent-encoded character
# (``%20sk-...``, ``%22sk-...``) in a text that is not read as a URL.
_KEY_START = (r"(?:(?<!\w)|(?<=(?i:bearer))|(?<=\\[bfnrt])|(?<=\\u[0-9A-Fa-f]{4})"
              r"|(?<=%[0-9A-Fa-f]{2}))")


def _key_shaped(prefix: str, rest: str) -> re.Pattern[str]:
    """A key that begins with ``prefix`` (a pattern) and goes on as ``rest``, standing where
    :data:`_KEY_START` lets a key begin. The prefix is looked ahead for first, so the text
    before is looked back at only where a key's prefix stands (five looks back at every
    character made a search six times as slow)."""
    return re.compile(f"(?={prefix}){_KEY_START}{prefix}{rest}")


# Each pattern with the words one of which its match must hold (lowercase, see _lowered): a
# text holding none of them is not searched with it. Most log lines and error bodies hold
# none, and a search costs several microseconds while a word's look-up costs tens of
# nanoseconds.
_PATTERNS: list[tuple[re.Pattern[str], str, tuple[str, ...]]] = [
    # Authorization schemes: keep the scheme, drop the credential.
    (re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=:-]{8,}"), r"\1\2" + MASK,
     ("bearer", "basic", "token")),
    # Key-shaped strings: OpenAI/Anthropic/OpenRouter/DeepSeek style and other vendors'.
    (_key_shaped("sk-", r"[A-Za-z0-9_-]{6,}"), "sk-" + MASK, ("sk-",)),
    # switchpoint's keys, wherever they stand (their shape is exact, so glued to other text too)
    (re.compile(r"(sp-[0-9a-f]{10}_)[A-Za-z0-9_-]{8,}"), r"\1" + MASK, ("sp-",)),
    (_key_shaped("(?:AKIA|ASIA)", r"[0-9A-Z]{16}\b"), MASK, ("akia", "asia")),
    (_key_shaped("AIza", r"[0-9A-Za-z_-]{30,}"), MASK, ("aiza",)),
    (_key_shaped("(?:gsk|xai|hf|ghp|gho|glpat|r8|pplx|csk|fw)[-_]",
                 r"[A-Za-z0-9_-]{16,}"), MASK,
     ("gsk", "xai", "hf", "ghp", "gho", "glpat", "r8", "pplx", "csk", "fw")),
    (_key_shaped("github_pat_", r"[A-Za-z0-9_]{20,}"), MASK, ("github_pat_",)),
    (_key_shaped("eyJ", r"[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+"), MASK,  # JWT
     ("eyj",)),
    # A URL's password (scheme://user:password@host): the user stays.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@"), r"\1" + MASK + "@",
     ("://",)),
    # A URL's user with no password (scheme://token@host), or an empty one
    # (scheme://token:@host, as curl's -u token: sends it): a credential by itself.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/:@?#]+(:?@)"), r"\1" + MASK + r"\2",
     ("://",)),
    # name: value / "name": "value" / name=value, for names that hold credentials.
    (re.compile(r"""(?ix)
        ( (?:x-)?api[-_]?key | authorization | access[-_]?token | refresh[-_]?token
          | client[-_]?secret | secret[-_]?key | secret | password | passwd )
        ( \\?["']? \s* [:=] \s* \\?["']? )
        (?! \[REDACTED\] | (?:bearer|basic|token)\s )
        ( [^\s"'\\,;}&]{4,} )"""), r"\1\2" + MASK,
     ("api", "authorization", "access", "refresh", "client", "secret", "passw")),
]


# A query parameter that carries a credential: its name is, or ends in (after ``_``, ``-`` or
# ``.``), one of these words; its value runs to the next ``&``, ``#``, ``;`` or space.
_QUERY_SECRET = re.compile(r"""(?ix)
    ( [?&;] (?: [a-z0-9_.-]* [_.-] )?
      (?: (?:api)?key | (?:access|auth|id|refresh|session)?token | auth | authorization
        | secret | password | passwd | pwd | sig | signature | session | credentials?
        | code ) = )
    (?! \[REDACTED\] )
    ( [^&#;\s"]+ )""")


class _Secrets:
    """The secret values switchpoint has handled, most recent last."""

    def __init__(self) -> None:
        self._values: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    def add(self, values: Iterable[str | None]) -> None:
        with self._lock:
            changed = False
            for value in values:
                value = (value or "").strip()
                if len(value) < MIN_SECRET:
                    continue
                if value in self._values:
                    self._values.move_to_end(value)
                    continue
                self._values[value] = None
                changed = True
                while len(self._values) > MAX_SECRETS:
                    self._values.popitem(last=False)
            if changed:
                # Longest first, so a key that contains another is masked whole.
                ordered = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def pattern(self) -> re.Pattern[str] | None:
        return self._pattern


_SECRETS = _Secrets()


def remember(*values: str | None) -> None:
    """Redact these values from now on (an API key as it is read, the admin token)."""
    _SECRETS.add(values)


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every known secret, every value in ``extra`` and anything shaped like a
    credential replaced by ``[REDACTED]``."""
    if not text:
        return text
    for value in extra:
        if value and len(value) >= MIN_SECRET and value in text:
            text = text.replace(value, MASK)
    known = _SECRETS.pattern()
    if known is not None:
        text = known.sub(MASK, text)
    lowered = _lowered(text)
    for pattern, replacement, words in _PATTERNS:
        for word in words:
            if word in lowered:
                text = pattern.sub(replacement, text)
                break
    return text


# The letters other than ASCII ones that an ignore-case pattern's ASCII letter matches (every
# one Python's re has: dotted and dotless I, long s; the Kelvin sign lowers to k by itself),
# each folded to that letter before a text is lowered: "İ" lowers to two characters, "ı" and
# "ſ" to themselves.
_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s"})


def _lowered(text: str) -> str:
    """``text`` in lower case, as :data:`_PATTERNS`' words are looked up in it: each letter an
    ignore-case pattern's ASCII letter would match is that letter here (a dotted I an ``i``,
    the Kelvin sign a ``k``, a long s an ``s``), so a word missing from it cannot be matched
    there."""
    return (text if text.isascii() else text.translate(_FOLD)).lower()


def _redact_query(text: str) -> str:
    """``text`` with the value of each query parameter named for a credential masked."""
    return _QUERY_SECRET.sub(r"\1" + MASK, text) if "=" in text else text


def redact_url(text: str) -> str:
    """``text``, a URL or a request line quoting one, with its secrets redacted, those written
    percent-encoded too. Unchanged when it holds none; when a secret shows only once decoded,
    the decoded text, redacted and percent-encoded again (control characters and spaces stay
    encoded). Past :data:`MAX_URL` characters the rest is cut."""
    if len(text) > MAX_URL:
        text = f"{text[:MAX_URL]}...[{len(text) - MAX_URL} more characters not shown]"
    redacted = _redact_query(redact(text))
    decoded = redacted
    for _ in range(MAX_URL_DECODES):
        if "%" not in decoded and "+" not in decoded:
            break
        step = urllib.parse.unquote_plus(decoded)
        if step == decoded:
            break
        decoded = step
        clean = _redact_query(redact(decoded))
        if clean != decoded:
            return urllib.parse.quote(clean, safe=_URL_SAFE)
    return redacted


def url_secrets(url: str | None) -> list[str]:
    """The secrets ``url`` carries, each as written and percent-decoded: its userinfo's
    password (``https://user:password@host``: the user is no secret), or its user when it has
    no password or an empty one (``https://token@host``, ``https://token:@host``: a credential
    by itself), and the value of each
    query parameter :func:`redact_url` redacts (``?key=``, ``?api_key=``, ``?sig=``, ...;
    ``api-version`` is none)."""
    if not url:
        return []
    parts = urllib.parse.urlsplit(url[:MAX_URL])
    found = []
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        user, _, password = userinfo.partition(":")
        found.append(password or user)
    if parts.query:
        found.extend(m.group(2) for m in _QUERY_SECRET.finditer(f"?{parts.query}"))
    decoded = [urllib.parse.unquote_plus(v) for v in found]
    return list(dict.fromkeys(v for v in [*found, *decoded] if v))


def redact_value(value: Any, extra: Iterable[str] = (), _depth: int = 0) -> Any:
    """A JSON-like value (an upstream's parsed error body) with every string redacted."""
    if isinstance(value, str):
        return redact(value, extra)
    if _depth >= MAX_DEPTH:
        return MASK if isinstance(value, (dict, list)) else value
    if isinstance(value, dict):
        return {(redact(k, extra) if isinstance(k, str) else k):
                redact_value(v, extra, _depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v, extra, _depth + 1) for v in value]
    return value


def header_secrets(headers: Any) -> list[str]:
    """The credentials in outgoing request headers (``authorization``, ``x-api-key``,
    ``api-key``), so the answer to that request can be scrubbed of them."""
    out: list[str] = []
    for name, value in dict(headers).items():
        lowered = str(name).lower()
        if lowered in ("authorization", "proxy-authorization"):
            out.append(str(value).split(" ", 1)[-1].strip())
        elif lowered in ("x-api-key", "api-key", "x-goog-api-key"):
            out.append(str(value).strip())
    return [v for v in out if len(v) >= MIN_SECRET]


def clip(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters (with a note of how much was cut)."""
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters not kept]"
