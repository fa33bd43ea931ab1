"""The name of an environment variable that holds a secret (a model's ``api_key_env``, the
config's ``admin_token_env``): the rule of its shape, said without showing the value, which
is often the secret itself given by mistake."""

from __future__ import annotations

import re

from switchpoint._messages import json_quoted

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A long run of letters and digits with no '_' (unless all capitals) is a token, not a name.
_SECRET_LIKE = re.compile(r"(?=.*[0-9])[A-Za-z0-9]{16,}")


def env_var_name_problem(value: str, example: str) -> str | None:
    """Why ``value`` is no name of an environment variable (letters, digits and ``_``, not
    starting with a digit) or looks like a secret itself, else None; ``example`` is such a
    name the message gives (``OPENAI_API_KEY``). The value is never repeated."""
    must = (f"must be the name of the environment variable that holds the secret, such as "
            f"{example}")
    if not _ENV_NAME.fullmatch(value):
        bad = next((c for c in value if not (c.isascii() and (c.isalnum() or c == "_"))),
                   value[:1])
        # "NAME (...)", not "NAME: ...": the words after "SOME_API_KEY:" would read as a
        # credential to the redaction every error message goes through.
        return (f'{must} (letters, digits and "_", not starting with a digit; the value given, '
                f"not shown in case it is the secret itself, has {len(value)} characters and "
                f"holds {json_quoted(bad)})")
    if _SECRET_LIKE.fullmatch(value) and not value.isupper():
        return (f"{must}; the value given ({len(value)} letters and digits, not shown) looks "
                "like a secret itself: export it in a variable and name the variable here")
    return None
