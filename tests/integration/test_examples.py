"""examples/demo.py replays the prototype's demo against two servers on one Redis."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from ..support import RedisProcess, open_cluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        await room.run_room(server.ws, "example", ["hello"], duration=0.5, out=lines.append)
        text = "\n".join(lines)
        assert "hello" in text and "example" in text, text
