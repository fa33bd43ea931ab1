"""A disk that fills while the service serves, made real with a file-size limit
(``RLIMIT_FSIZE``, as ``ulimit -f`` sets it; Python ignores ``SIGXFSZ``, so a write past the
limit fails with ``EFBIG``): the database and the spill file beside it both refuse writes,
as on a full disk, until the limit is lifted again."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from switchpoint.errors import StoreError
from switchpoint.governance.keys import KeySpec, KeyStore
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import math_prompt
from tests.integration.learning_env import chat, learning_server, post

# Writes past this many bytes of any file fail: below every file the service writes to.
LIMIT = 1024


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """This process's files refuse writes past ``limit`` bytes until the block ends (the soft
    limit alone: it can be lifted again)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_full_disk_that_takes_not_even_the_spill_file_turns_new_requests_away(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With budgets on, the database refusing writes and the spill file refused too: the
    request under way when it happens is answered (its records wait in memory), and the next
    ones get a 503 naming both refusals, forwarded to no provider, rather than answers that
    a crash would leave unlogged and uncharged (the gateway kept answering, its spend in
    memory only: a stop then lost it). Once the disk takes writes again the service takes
    requests without a restart, and every answered request is in the log."""
    # The store tries the database again 1.5 s after a refused write, not 5 s: the same
    # behaviour, scaled.
    monkeypatch.setattr("switchpoint.store.sqlite.REFUSING_S", 1.5)
    with learning_server(fake, tmp_path, "budgets: {total: 100/month}\n") as server:
        store = server.service.gateway.learning.store
        assert store is not None
        chat(server, math_prompt(1))  # the schema and the first pages are on disk
        answered: list[str] = []
        with file_size_limit(LIMIT):
            refused = None
            for n in range(5):
                try:
                    headers, _ = chat(server, math_prompt(10 + n))
                except openai.APIStatusError as exc:
                    refused = exc
                    break
                answered.append(headers["x-switchpoint-request-id"])
            assert refused is not None, "every request was answered with nothing to log it"
            assert refused.status_code == 503
            message = refused.response.json()["error"]["message"]
            assert refused.response.json()["error"]["code"] == "storage_unavailable"
            assert "unwritten.jsonl" in message and "File too large" in message
            calls = len(fake.requests())
            again = post(server, "/v1/chat/completions",
                         {"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
            assert again.status_code == 503 and int(again.headers["retry-after"]) >= 1
            assert len(fake.requests()) == calls  # not forwarded
        _until(lambda: store.spill_full is None, "the store took writes again")
        headers, _ = chat(server, math_prompt(30))
        answered.append(headers["x-switchpoint-request-id"])
        _until(lambda: set(answered) <= {e["id"] for e in store.requests(limit=100)[0]},
               "every answered request logged")
        spent = httpx.get(f"{server.base}/v1/router/budgets", timeout=15).json()["data"]
        logged = sum(e["charged_usd"] for e in store.requests(limit=100)[0])
        assert abs(spent[0]["spent_usd"] - logged) < 1e-9


def test_a_key_made_on_a_full_disk_is_refused_saying_what_to_do(tmp_path: Path) -> None:
    """A key store that cannot grow (the disk filled after it opened): the key is refused
    with the file and what to do (it gave the database's words alone; a client is still told
    those alone), and no key is made."""
    with KeyStore.in_dir(tmp_path).open() as store:
        store.create(KeySpec(tenant="acme", name="first"))
        with file_size_limit(LIMIT), pytest.raises(StoreError) as info:
            store.create(KeySpec(tenant="acme", name="second"))
        assert str(info.value).startswith(f"'{store.path}': cannot store the new key (")
        assert "free space" in str(info.value) and "free space" not in info.value.reason
        assert not info.value.damaged  # (freeing space mends it: trying again may help)
        assert [k.name for k in store.list()] == ["first"]
