"""examples/ run on the client library against real servers on one Redis."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import trio

from ..support import DEADLINE, RedisProcess, open_cluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_second_websocket_client_in_examples() -> None:
    assert not (EXAMPLES / "_client.py").exists()
    for script in EXAMPLES.glob("*.py"):
        assert "trio_websocket" not in script.read_text(), script


async def test_demo_passes_against_two_servers(redis_server: RedisProcess) -> None:
    demo = load("demo")
    async with open_cluster(redis_server.url, 2) as (s0, s1):
        lines: list[str] = []
        ok = await demo.run_demo(s0.ws, s1.ws, out=lines.append)
        assert ok, "\n".join(lines)
        assert "demo: 9 passed, 0 failed" in lines


async def test_room_example_joins_sends_and_leaves(redis_server: RedisProcess) -> None:
    room = load("room")
    async with open_cluster(redis_server.url, 1) as (server,):
        lines: list[str] = []
        status = await room.run_room(
            [server.ws], "example", ["hello"], duration=0.5, out=lines.append
        )
        text = "\n".join(lines)
        assert status == 0, text
        assert "[room example] members:" in text, text
        assert "> hello" in text and "left example (acknowledged)" in text, text


async def test_chat_example_sees_its_own_line(redis_server: RedisProcess) -> None:
    chat = load("chat")
    echoed = trio.Event()
    out: list[str] = []

    def collect(line: str) -> None:
        out.append(line)
        if line.endswith("] hi from the example"):
            echoed.set()

    async def lines() -> AsyncIterator[str]:
        yield "hi from the example"
        with trio.fail_after(DEADLINE):  # end of input once the echo is printed
            await echoed.wait()

    async with open_cluster(redis_server.url, 1) as (server,):
        status = await chat.run_chat([server.ws], lines(), linger=0, out=collect)
        assert status == 0, out
        assert echoed.is_set(), out
