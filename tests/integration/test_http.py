"""The HTTP routes of PROTOCOL.md section 2, against in-process servers.

Health and readiness follow a real redis-server being stopped and started; the
admin API is driven over HTTP and checked through real websocket clients on a
two-server cluster.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import trio

from ..support import (
    RedisProcess,
    RunningServer,
    open_client,
    open_cluster,
    open_server,
    settings_for,
    wait_until_async,
)

TOKEN = "s3cret"
ADMIN_ROUTES = [
    ("POST", "/api/publish", json.dumps({"channel": "chat", "content": "x"})),
    ("GET", "/api/rooms", None),
    ("GET", "/api/rooms/lobby/members", None),
    ("GET", "/api/servers", None),
]
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition as ``{'name{labels}': value}``."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match is not None, f"not a Prometheus sample line: {line!r}"
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


async def metrics_of(server: RunningServer) -> dict[str, float]:
    status, body = await server.get("/metrics")
    assert status == 200
    assert isinstance(body, str), body
    return parse_metrics(body)


async def request(
    server: RunningServer, method: str, path: str, body: str | None, token: str | None
) -> tuple[int, Any]:
    if method == "POST":
        return await server.post(path, body or "", token=token)
    return await server.get(path, token=token)


async def raw_post(server: RunningServer, path: str, body: bytes) -> tuple[int, Any]:
    """POST raw bytes (``RunningServer.post`` can only send UTF-8 text)."""
    host, port = server.http.removeprefix("http://").split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(head.encode() + body)
            raw = b""
            while True:
                chunk = await stream.receive_some(65536)
                raw += chunk
                header, sep, content = raw.partition(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length:\s*(\d+)", header)
                if not chunk or (sep and length and len(content) >= int(length.group(1))):
                    break
    status = int(header.split(b" ", 2)[1])
    try:
        return status, json.loads(content)
    except ValueError:
        return status, content.decode(errors="replace")


async def status_is(server: RunningServer, path: str, expected: int) -> bool:
    status, _ = await server.get(path)
    return status == expected


# -- health and readiness --------------------------------------------------------


async def test_healthz_reports_server_broker_and_connections(redis_server: RedisProcess) -> None:
    async with open_server(settings_for("health-1", redis_server.url)) as server:
        await wait_until_async(lambda: status_is(server, "/readyz", 200))
        status, body = await server.get("/healthz")
        assert status == 200, body
        assert body["server"] == "health-1"
        assert body["broker"] == "redis"
        assert body["broker_connected"] is True
        assert body["connections"] == 0
        async with open_client(server.ws), open_client(server.ws):
            status, body = await server.get("/healthz")
            assert (status, body["connections"]) == (200, 2)


async def test_healthz_on_the_memory_broker() -> None:
    async with open_server(settings_for("health-mem")) as server:
        status, body = await server.get("/healthz")
        assert status == 200, body
        assert (body["server"], body["broker"], body["broker_connected"]) == (
            "health-mem",
            "memory",
            True,
        )
        assert body["connections"] == 0


async def test_healthz_and_readyz_follow_redis_going_away_and_back(
    redis_server: RedisProcess,
) -> None:
    async with open_server(settings_for("health-2", redis_server.url)) as server:
        await wait_until_async(lambda: status_is(server, "/readyz", 200))
        assert (await server.get("/healthz"))[0] == 200

        redis_server.stop()
        await wait_until_async(lambda: status_is(server, "/healthz", 503))
        status, body = await server.get("/healthz")
        assert status == 503
        assert isinstance(body["reason"], str) and body["reason"], body
        assert body["broker_connected"] is False
        status, body = await server.get("/readyz")
        assert status == 503, body
        assert body["ready"] is False
        down = await metrics_of(server)
        assert down["wsproto_broker_up"] == 0.0

        redis_server.start()
        await wait_until_async(lambda: status_is(server, "/healthz", 200))
        await wait_until_async(lambda: status_is(server, "/readyz", 200))
        status, body = await server.get("/healthz")
        assert (status, body["broker_connected"]) == (200, True)
        assert "reason" not in body
        up = await metrics_of(server)
        assert up["wsproto_broker_up"] == 1.0
        assert up["wsproto_broker_reconnects_total"] == down["wsproto_broker_reconnects_total"] + 1


async def test_server_started_without_redis_becomes_ready_when_redis_appears(
    redis_server: RedisProcess,
) -> None:
    redis_server.stop()
    async with open_server(settings_for("late-redis", redis_server.url)) as server:
        status, body = await server.get("/healthz")
        assert status == 503, body
        assert body["reason"], body
        assert (await server.get("/readyz"))[0] == 503

        redis_server.start()
        await wait_until_async(lambda: status_is(server, "/readyz", 200))
        assert (await server.get("/healthz"))[0] == 200
        # The subscriptions deferred at start-up are in place now.
        assert redis_server.numsub("ping1", "ping2", "chat") == {"ping1": 1, "ping2": 1, "chat": 1}
        async with open_client(server.ws) as client:
            await client.send("chat", "SubmitMessage", "late")
            assert (await client.expect("NewMessageReceived"))["content"] == "late"


async def test_readyz_is_503_while_draining() -> None:
    async with open_server(settings_for("drain-1")) as server:
        await wait_until_async(lambda: status_is(server, "/readyz", 200))
        assert (await server.get("/readyz"))[1] == {"ready": True}
        server.app.hub.drain()
        status, body = await server.get("/readyz")
        assert status == 503
        assert body["ready"] is False and body["reason"], body


# -- demo page and metrics --------------------------------------------------------


async def test_index_is_the_html_demo_page() -> None:
    async with open_server(settings_for("index-1")) as server:
        status, body = await server.get("/")
        assert status == 200
        assert isinstance(body, str) and "<html" in body.lower()


async def test_metrics_follow_connections_messages_and_errors() -> None:
    async with open_server(settings_for("metrics-1")) as server:
        before = await metrics_of(server)
        assert before["wsproto_connections"] == 0
        chat_in = 'wsproto_messages_in_total{channel="chat"}'
        chat_out = 'wsproto_messages_out_total{channel="chat"}'
        bad_json = 'wsproto_errors_total{code="invalid_json"}'
        async with open_client(server.ws) as a, open_client(server.ws) as b:
            assert (await metrics_of(server))["wsproto_connections"] == 2
            await a.send("chat", "SubmitMessage", "counted")
            for client in (a, b):
                assert (await client.expect("NewMessageReceived"))["content"] == "counted"
            after_chat = await metrics_of(server)
            assert after_chat.get(chat_in) == before.get(chat_in, 0.0) + 1
            assert after_chat.get(chat_out) == before.get(chat_out, 0.0) + 2

            await a.ws.send_message("{not json")
            assert (await a.expect("Error"))["code"] == "invalid_json"
            after_error = await metrics_of(server)
            assert after_error.get(bad_json) == before.get(bad_json, 0.0) + 1

        async def no_connections() -> bool:
            return (await metrics_of(server))["wsproto_connections"] == 0

        await wait_until_async(no_connections)


# -- admin authorisation -----------------------------------------------------------


async def test_admin_routes_are_off_without_admin_token() -> None:
    async with open_server(settings_for("admin-off")) as server:
        for method, path, body in ADMIN_ROUTES:
            for token in (None, "anything", TOKEN):
                status, answer = await request(server, method, path, body, token)
                assert status == 403, (method, path, token, answer)


async def test_admin_routes_need_the_bearer_token() -> None:
    async with open_server(settings_for("admin-on", admin_token=TOKEN)) as server:
        for method, path, body in ADMIN_ROUTES:
            assert (await request(server, method, path, body, None))[0] == 401, path
            assert (await request(server, method, path, body, "wrong"))[0] == 401, path
            assert (await request(server, method, path, body, TOKEN + "x"))[0] == 401, path
            status, answer = await request(server, method, path, body, TOKEN)
            assert status == 200, (method, path, answer)


# -- admin API across a cluster ------------------------------------------------------


async def test_api_publish_chat_reaches_both_servers(redis_server: RedisProcess) -> None:
    async with open_cluster(redis_server.url, 2, admin_token=TOKEN) as (s0, s1):
        async with open_client(s0.ws) as a, open_client(s1.ws) as b:
            body = json.dumps({"channel": "chat", "content": "x"})
            assert await s0.post("/api/publish", body, token=TOKEN) == (200, {"published": True})
            for client in (a, b):
                envelope = await client.receive()
                assert envelope["channel"] == "chat"
                assert envelope["message"]["type"] == "NewMessageReceived"
                assert envelope["message"]["contents"]["content"] == "x"


async def test_api_publish_room_reaches_members_only(redis_server: RedisProcess) -> None:
    async with open_cluster(redis_server.url, 2, admin_token=TOKEN) as (s0, s1):
        async with (
            open_client(s0.ws) as a,
            open_client(s1.ws) as b,
            open_client(s0.ws) as outsider0,
            open_client(s1.ws) as outsider1,
        ):
            await a.join("r")
            assert (await a.expect("JoinedRoom"))["user"] == a.user
            await b.join("r")
            assert (await b.expect("JoinedRoom"))["user"] == b.user
            assert (await a.expect("JoinedRoom"))["user"] == b.user

            body = json.dumps({"channel": "chat-room", "room": "r", "message": "m"})
            assert await s1.post("/api/publish", body, token=TOKEN) == (200, {"published": True})
            for client in (a, b):
                got = await client.receive()
                assert got["message"]["contents"].pop("epoch")
                assert got == {
                    "channel": "chat-room",
                    "message": {
                        "type": "NewMessage",
                        "contents": {"room": "r", "user": "api", "message": "m", "offset": 1},
                    },
                }
            # Non-members: the next thing they see is the marker sent after it.
            await a.send("chat", "SubmitMessage", "marker")
            for client in (a, b, outsider0, outsider1):
                assert (await client.expect("NewMessageReceived"))["content"] == "marker"


async def test_api_publish_refuses_bad_bodies(redis_server: RedisProcess) -> None:
    bad_bodies = [
        "{not json",
        "",
        json.dumps(["chat", "x"]),
        json.dumps("chat"),
        json.dumps({"channel": "nope", "content": "x"}),
        json.dumps({"content": "x"}),
        json.dumps({"channel": "chat", "content": ""}),
        json.dumps({"channel": "chat"}),
        json.dumps({"channel": "chat", "content": 5}),
        json.dumps({"channel": "chat-room", "message": "m"}),
        json.dumps({"channel": "chat-room", "room": "", "message": "m"}),
        json.dumps({"channel": "chat-room", "room": "r" * 101, "message": "m"}),
        json.dumps({"channel": "chat-room", "room": "a\nb", "message": "m"}),
        json.dumps({"channel": "chat-room", "room": "r", "message": ""}),
        json.dumps({"channel": "chat-room", "room": "r"}),
    ]
    async with open_cluster(redis_server.url, 1, admin_token=TOKEN) as (server,):
        async with open_client(server.ws) as client:
            await client.join("r")
            await client.expect("JoinedRoom")
            for body in bad_bodies:
                status, answer = await server.post("/api/publish", body, token=TOKEN)
                assert status == 400, (body, answer)
                assert isinstance(answer, dict), (body, answer)
                assert isinstance(answer.get("error"), str) and answer["error"], (body, answer)
            # None of them published anything: the marker is the next envelope.
            marker = json.dumps({"channel": "chat", "content": "marker"})
            assert (await server.post("/api/publish", marker, token=TOKEN))[0] == 200
            assert (await client.expect("NewMessageReceived"))["content"] == "marker"
            # A 100-character room is still fine.
            ok = json.dumps({"channel": "chat-room", "room": "r" * 100, "message": "m"})
            assert (await server.post("/api/publish", ok, token=TOKEN))[0] == 200


async def test_api_publish_refuses_a_body_that_is_not_utf8() -> None:
    async with open_server(settings_for("not-utf8", admin_token=TOKEN)) as server:
        body = b'{"channel": "chat", "content": "\xff"}'
        status, answer = await raw_post(server, "/api/publish", body)
        assert status == 400, answer
        assert isinstance(answer, dict) and answer.get("error"), answer


async def test_api_publish_refuses_a_body_over_max_message_bytes() -> None:
    settings = settings_for("big-body", admin_token=TOKEN, max_message_bytes=1024)
    async with open_server(settings) as server, open_client(server.ws) as client:
        body = json.dumps({"channel": "chat", "content": "x" * 2000}).encode()
        status, answer = await raw_post(server, "/api/publish", body)
        assert status == 413 and "MAX_MESSAGE_BYTES" in answer["error"], answer
        # Nothing was published: the client's next envelope is the marker.
        await client.send("chat", "SubmitMessage", "marker")
        assert (await client.expect("NewMessageReceived"))["content"] == "marker"


async def test_api_rooms_and_members_across_the_cluster(redis_server: RedisProcess) -> None:
    odd_room = "lobby a/b"
    async with open_cluster(redis_server.url, 2, admin_token=TOKEN) as (s0, s1):
        assert await s0.get("/api/rooms", token=TOKEN) == (200, {"rooms": []})
        async with (
            open_client(s0.ws) as a,
            open_client(s1.ws) as b,
            open_client(s1.ws) as c,
        ):
            await a.join("r")
            await b.join("r")
            await c.join(odd_room)
            expected_rooms = {
                "rooms": [{"room": odd_room, "members": 1}, {"room": "r", "members": 2}]
            }
            for server in (s0, s1):
                assert await server.get("/api/rooms", token=TOKEN) == (200, expected_rooms)

                status, body = await server.get("/api/rooms/r/members", token=TOKEN)
                assert status == 200, body
                assert body == {"room": "r", "users": sorted([a.user, b.user])}

                path = f"/api/rooms/{quote(odd_room, safe='')}/members"
                status, body = await server.get(path, token=TOKEN)
                assert (status, body) == (200, {"room": odd_room, "users": [c.user]})

                status, body = await server.get("/api/rooms/nobody-here/members", token=TOKEN)
                assert (status, body) == (200, {"room": "nobody-here", "users": []})


async def test_api_members_of_a_room_starting_with_a_slash(redis_server: RedisProcess) -> None:
    """Room names may start with '/' (1 to 100 characters, no control characters)."""
    async with open_cluster(redis_server.url, 1, admin_token=TOKEN) as (server,):
        async with open_client(server.ws) as a, open_client(server.ws) as b:
            await a.join("/start")
            await b.join("start")
            path = f"/api/rooms/{quote('/start', safe='')}/members"
            assert await server.get(path, token=TOKEN) == (
                200,
                {"room": "/start", "users": [a.user]},
            )


async def test_api_rooms_members_with_spaces_and_unicode(redis_server: RedisProcess) -> None:
    room = "ünï cödé & more?#"
    async with open_cluster(redis_server.url, 1, admin_token=TOKEN) as (server,):
        async with open_client(server.ws) as a:
            await a.join(room)
            path = f"/api/rooms/{quote(room, safe='')}/members"
            assert await server.get(path, token=TOKEN) == (200, {"room": room, "users": [a.user]})


async def test_api_servers_lists_both_servers_with_connections(
    redis_server: RedisProcess,
) -> None:
    async with open_cluster(redis_server.url, 2, admin_token=TOKEN, presence_ttl=0.6) as (
        s0,
        s1,
    ):
        listing: Any = None

        async def servers_are(expected: list[dict[str, Any]]) -> bool:
            nonlocal listing
            status, listing = await s1.get("/api/servers", token=TOKEN)
            return status == 200 and listing == {"servers": expected}

        await wait_until_async(
            lambda: servers_are([{"id": "s0", "connections": 0}, {"id": "s1", "connections": 0}])
        )
        async with open_client(s0.ws), open_client(s0.ws), open_client(s1.ws):
            await wait_until_async(
                lambda: servers_are(
                    [{"id": "s0", "connections": 2}, {"id": "s1", "connections": 1}]
                )
            )
        await wait_until_async(
            lambda: servers_are([{"id": "s0", "connections": 0}, {"id": "s1", "connections": 0}])
        )
        assert listing == {
            "servers": [{"id": "s0", "connections": 0}, {"id": "s1", "connections": 0}]
        }


async def test_metrics_names_are_prometheus_text() -> None:
    async with open_server(settings_for("metrics-2")) as server:
        status, body = await server.get("/metrics")
        assert status == 200
        samples = parse_metrics(body)
        for name in (
            "wsproto_connections",
            "wsproto_rooms",
            "wsproto_broker_up",
            "wsproto_broker_reconnects_total",
            "wsproto_dropped_messages_total",
            "wsproto_slow_consumer_closes_total",
        ):
            assert name in samples, name
        assert samples["wsproto_broker_up"] == 1.0
