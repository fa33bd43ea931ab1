"""Bounds that the command line's help quotes, held apart from the modules that enforce them.

Those modules (the labelling run, the store's retention, the reports, the governance settings)
import the config, SQLite, pydantic or asyncio; building the parser, which every command does
(``--help`` too), needs only these numbers. This module imports nothing, so that stays cheap.
Each bound is defined here once and re-exported by the module that enforces it.
"""

from __future__ import annotations

#: Prompts labelled at once by ``switchpoint label`` when ``--concurrency`` is left out.
DEFAULT_CONCURRENCY = 4
#: The most prompts ``switchpoint label`` labels at once.
MAX_CONCURRENCY = 256

#: The longest retention taken (a century): a longer one, infinity included, deletes nothing.
MAX_RETENTION_DAYS = 36_525

#: The most a forecast or an SLA report takes (the HTTP reports' bounds too): a billion
#: requests an hour, a request of MAX_TOKENS tokens each way, a window of a year. Past them a
#: forecast overflowed to infinity.
MAX_REQUESTS_PER_HOUR = 1e9
MAX_SINCE_HOURS = 24 * 366
#: What an SLA report's window (``since_hours``) may be, in words (for the messages that refuse
#: one, the report's and the command line's, and its option's help).
SINCE_HOURS = f"a number of hours more than 0 and at most {MAX_SINCE_HOURS:,} (366 days)"

#: The largest request body taken unless ``max_request_bytes`` says otherwise (1 MiB); a
#: :class:`~switchpoint.router.Router`'s bound on a prompt's characters by default, so a
#: router alone takes every prompt the HTTP door's default body limit takes.
DEFAULT_MAX_REQUEST_BYTES = 1 << 20
#: The most bytes a request, an upstream answer or one of its stream lines may be set to take
#: (1 GiB), and the most characters a router's prompts may be set to take: far past any real
#: need, so only a mistake (1e14) is refused.
MAX_BYTES = 1 << 30

#: The most tenants a config may list (and so name anywhere in it), and a list of tenants
#: anywhere (an experiment's, the ones a learning status is asked of) may name: each is
#: checked at every reload and a key names one, and ten thousand is past any config written
#: (a tenant is an organisation, not a user).
MAX_TENANTS = 10_000

# The largest rate limits a tenant or key may set: far beyond any one gateway's traffic, and
# well inside the 64-bit integers the key store keeps them as.
MAX_RPM = 10_000_000
MAX_TPM = 10_000_000_000
