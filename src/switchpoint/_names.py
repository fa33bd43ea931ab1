"""What a name the config gives (a tenant, an experiment and its arms, a policy) may be.

Such names reach URL paths, query values, metric labels and log lines as they are, so they
are short and plain. This module imports only the messages' helpers, so the library's lowest
layers (a feedback event's tenant) check a tenant's name by the same rule the config does.
"""

from __future__ import annotations

import re

from switchpoint._messages import one_of

#: The longest name: a tenant's too, at every door that takes one.
MAX_NAME = 64
NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}")
#: :data:`NAME` in words, as a message or a schema says what a name may hold.
NAME_RULE = (f"1-{MAX_NAME} letters, digits, {one_of(('_', '.', '-'))}, starting with a letter "
             "or digit")
