"""``GET /api/servers``: the answering server's own count is exact (PROTOCOL.md section 2).

The others' counts travel through the broker (at most a second old, the Redis
broker's business); this server's own entry must be its open websockets now,
not what its last lease renewal wrote.
"""

from __future__ import annotations

from ..support import RedisProcess, open_client, open_cluster, wait_until

TOKEN = "servers-token"


async def test_own_count_is_exact_at_once(redis_server: RedisProcess) -> None:
    async with open_cluster(redis_server.url, 2, admin_token=TOKEN) as (s0, s1):
        async with open_client(s0.ws), open_client(s0.ws), open_client(s1.ws):
            status, body = await s0.get("/api/servers", token=TOKEN)
            assert status == 200, body
            counts = {entry["id"]: entry["connections"] for entry in body["servers"]}
            assert set(counts) == {"s0", "s1"}
            assert counts["s0"] == 2
            status, body = await s1.get("/api/servers", token=TOKEN)
            counts = {entry["id"]: entry["connections"] for entry in body["servers"]}
            assert counts["s1"] == 1
        # And back down as soon as the server has seen them go.
        await wait_until(lambda: s0.app.hub.connection_count == 0)
        status, body = await s0.get("/api/servers", token=TOKEN)
        counts = {entry["id"]: entry["connections"] for entry in body["servers"]}
        assert counts["s0"] == 0
