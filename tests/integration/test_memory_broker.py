"""One server with the in-process broker (no REDIS_URL): the whole protocol works."""

from __future__ import annotations

from ..support import open_client, open_server, settings_for


async def test_single_server_without_redis_serves_chat_pings_and_rooms() -> None:
    async with open_server(settings_for("solo")) as server:
        assert server.app.hub.broker.name == "memory"
        async with open_client(server.ws) as a, open_client(server.ws, batched=True) as b:
            assert (await server.get("/ping2"))[0] == 200
            for client in (a, b):
                assert await client.expect("Ping") == 2
            await a.send("chat", "SubmitMessage", "hi")
            for client in (a, b):
                assert (await client.expect("NewMessageReceived"))["content"] == "hi"
            assert await a.join("room") == [a.user]
            await a.expect("JoinedRoom")
            assert sorted(await b.join("room")) == sorted([a.user, b.user])
            for client in (a, b):
                assert await client.expect("JoinedRoom") == {"room": "room", "user": b.user}
            await b.send("chat-room", "SendMessage", {"room": "room", "message": "m"})
            for client in (a, b):
                assert (await client.expect("NewMessage"))["user"] == b.user
            await b.send("chat-room", "LeaveRoom", {"room": "room"})
            for client in (b, a):
                assert await client.expect("LeftRoom") == {"room": "room", "user": b.user}
            status, health = await server.get("/healthz")
            assert status == 200 and health["broker"] == "memory"
