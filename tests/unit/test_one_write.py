"""OneWriteTransport: what one loop step writes leaves as one write, in order, and closing
never loses or reorders what was written before it. The transport underneath is a
recording stand-in for asyncio's; every HTTP test of the suite runs over the real one."""

from __future__ import annotations

import asyncio
from typing import Any

from evothesis.api.transport.one_write import OneWriteTransport


class RecordingTransport:
    """What an asyncio transport was asked to do, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", None))

    def write_eof(self) -> None:
        self.calls.append(("write_eof", None))

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str) -> Any:
        return {"peername": ("127.0.0.1", 5000)}.get(name)


def run(steps: Any) -> RecordingTransport:
    async def main() -> RecordingTransport:
        real = RecordingTransport()
        await steps(OneWriteTransport(real, asyncio.get_running_loop()))  # type: ignore[arg-type]
        return real

    return asyncio.run(main())


def test_writes_of_one_step_leave_together_at_its_end() -> None:
    async def steps(transport: OneWriteTransport) -> None:
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(memoryview(b"{}"))
        assert transport._transport.calls == []  # type: ignore[attr-defined]
        await asyncio.sleep(0)
        transport.write(b"next")
        await asyncio.sleep(0)

    real = run(steps)
    assert real.calls == [
        ("write", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"),
        ("write", b"next"),
    ]


def test_close_and_write_eof_send_what_was_written_first() -> None:
    async def steps(transport: OneWriteTransport) -> None:
        transport.write(b"head")
        transport.write_eof()
        transport.write(b"body")
        transport.close()
        await asyncio.sleep(0)

    real = run(steps)
    assert real.calls == [
        ("write", b"head"),
        ("write_eof", None),
        ("write", b"body"),
        ("close", None),
    ]


def test_nothing_is_written_to_a_transport_already_closing() -> None:
    async def steps(transport: OneWriteTransport) -> None:
        transport.write(b"late")
        transport._transport.closing = True  # type: ignore[attr-defined]
        await asyncio.sleep(0)

    assert run(steps).calls == []


def test_everything_else_is_the_real_transports() -> None:
    async def steps(transport: OneWriteTransport) -> None:
        assert transport.get_extra_info("peername") == ("127.0.0.1", 5000)
        assert transport.is_closing() is False

    run(steps)
