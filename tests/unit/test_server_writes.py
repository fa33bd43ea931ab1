"""The server's connections write what one turn of the event loop produced in one write."""

from __future__ import annotations

import asyncio

from switchpoint.server.protocol import _CoalescingTransport


class Recording(asyncio.Transport):
    """The socket side of a connection: records each write the connection makes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0


def test_writes_of_one_turn_go_out_together_and_a_close_sends_them_first() -> None:
    async def run() -> tuple[Recording, list[bytes], int]:
        raw = Recording()
        transport = _CoalescingTransport(raw, asyncio.get_running_loop(), lambda: False)
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"")
        transport.write(b"body")
        pending = transport.get_write_buffer_size()
        assert raw.writes == []  # nothing is sent before the turn ends
        await asyncio.sleep(0)
        first = list(raw.writes)
        transport.write(b"0\r\n\r\n")
        transport.close()  # what is pending goes out before the close
        return raw, first, pending

    raw, first, pending = asyncio.run(run())
    assert first == [b"HTTP/1.1 200 OK\r\n\r\nbody"] and pending == 23
    assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"0\r\n\r\n"] and raw.closed


def test_a_close_the_protocol_stages_itself_sends_what_is_pending_and_leaves_it_open() -> None:
    # (the answer to a body refused while the client still sends it: the protocol ends its
    # side of the stream and closes once the client has, not the transport at once)
    async def run() -> Recording:
        raw = Recording()
        transport = _CoalescingTransport(raw, asyncio.get_running_loop(), lambda: True)
        transport.write(b"HTTP/1.1 413 Content Too Large\r\n\r\n")
        transport.close()
        return raw

    raw = asyncio.run(run())
    assert raw.writes == [b"HTTP/1.1 413 Content Too Large\r\n\r\n"] and not raw.closed


def test_an_abort_drops_what_is_pending_and_nothing_is_written_after_a_close() -> None:
    async def run() -> tuple[Recording, Recording]:
        loop = asyncio.get_running_loop()
        aborted, closed = Recording(), Recording()
        a = _CoalescingTransport(aborted, loop, lambda: False)
        a.write(b"never sent")
        a.abort()
        c = _CoalescingTransport(closed, loop, lambda: False)
        c.write(b"sent")
        c.close()
        c.write(b"too late")
        await asyncio.sleep(0)
        return aborted, closed

    aborted, closed = asyncio.run(run())
    assert aborted.aborted and aborted.writes == []
    assert closed.writes == [b"sent"]
