"""Bounds and defaults that the command line's help quotes, held apart from the modules that
enforce them.

Those modules (the labelling run, the store's retention, the reports, the governance settings,
the router, fitting and the policies) import the config, SQLite, pydantic, asyncio or NumPy;
building the parser, which every command does (``--help`` too), needs only these numbers. This
module imports nothing, so that stays cheap. Each bound is defined here once and re-exported
by the module that enforces it (a policy's default is its constructor's).
"""

from __future__ import annotations

#: Prompts labelled at once by ``switchpoint label`` when ``--concurrency`` is left out.
DEFAULT_CONCURRENCY = 4
#: The most prompts ``switchpoint label`` labels at once.
MAX_CONCURRENCY = 256

#: The most decisions one :meth:`~switchpoint.router.Router.route_batch` call makes (its
#: prompts or embeddings times its cost weights), and the most prompts or embeddings one
#: :meth:`~switchpoint.router.Router.estimates` or
#: :meth:`~switchpoint.router.Router.analyze_routing_distribution` call takes. Each decision
#: is some kilobytes (every candidate's score, error and cost, its reasoning, what is kept for
#: its feedback): 10,000 take about 100 MB and two seconds on one core from vectors, under a
#: minute when the embedding model reads the prompts too, where 200,000 took 1.8 GB and half a
#: minute. An evaluation set or a day's sample fits in one call; a larger set is routed in
#: calls of this many, as ``switchpoint route --input`` routes a file of any length.
MAX_BATCH = 10_000

#: The embedder a policy is fitted with when none is named (``fit``, ``switchpoint fit``).
DEFAULT_EMBEDDER_ID = "all-MiniLM-L6-v2/tail-64"
#: The cluster policy's clusters and the knn policy's neighbours when none are given.
DEFAULT_CLUSTERS = 40
DEFAULT_NEIGHBOURS = 25

#: The most decisions a router may remember for outcomes (a memory_size, in the config and
#: in LearningSettings alike).
MAX_MEMORY_SIZE = 10_000_000

#: The most entries a router's cache holds (the config's ``cache.size`` takes as many): a
#: bound on its memory, since the LRU evicts only past it.
MAX_CACHE_ENTRIES = 10_000_000
#: The longest a decision is kept in the cache: a year (the config's ``cache.ttl_seconds``).
MAX_CACHE_TTL_S = 366 * 86_400

#: The most bytes a load reads of a weights package's arrays and profiles together (each is
#: held whole): far past a knn package fitted on a million prompts (about 2 GB), and raised
#: with max_weights_bytes (the config's key, the CLI's --max-weights-bytes, load_weights'
#: argument).
MAX_WEIGHTS_BYTES = 8 << 30
#: The most max_weights_bytes may be set to (1 TiB).
MAX_WEIGHTS_BYTES_LIMIT = 1 << 40

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
