"""The Redis bridge under split TCP reads, and messages ordered end to end."""

from __future__ import annotations

from ..support import (
    RedisProcess,
    open_client,
    open_cluster,
    open_splitting_proxy,
)


async def test_messages_split_in_two_tcp_pieces_are_all_delivered_in_order(
    redis_server: RedisProcess,
) -> None:
    async with open_splitting_proxy(redis_server.port) as proxy_port:
        url = f"redis://127.0.0.1:{proxy_port}/0"
        async with open_cluster(url, 2) as (s0, s1):
            async with open_client(s0.ws) as sender, open_client(s1.ws, batched=True) as receiver:
                await receiver.join("split")
                await receiver.expect("JoinedRoom")
                await sender.join("split")
                await sender.expect("JoinedRoom")
                await receiver.expect("JoinedRoom")
                count = 300
                for i in range(count):
                    text = f"message {i} " + "x" * (i * 7 % 900)
                    await sender.send(
                        "chat-room", "SendMessage", {"room": "split", "message": text}
                    )
                got = [(await receiver.expect("NewMessage"))["message"] for _ in range(count)]
                assert [int(m.split()[1]) for m in got] == list(range(count))
            for server in (s0, s1):
                assert server.app.hub.status().reconnects == 0
