"""A client for wsproto_trio servers that reconnects and recovers by itself.

    async with open_client(["ws://a:9000/websockets", "ws://b:9000/websockets"]) as client:
        await client.join("lobby")
        await client.send("lobby", "hello")
        async for event in client:
            ...

See docs/client.md.
"""

from .client import Client, TokenSource, open_client
from .errors import ClientError, ClientTimeout, Closed, ConnectFailed, JoinFailed, Rejected
from .events import (
    ChatMessage,
    Connected,
    Disconnected,
    Error,
    Event,
    Expiring,
    Joined,
    Left,
    Lost,
    Member,
    MemberList,
    Other,
    Ping,
    Position,
    Reconnected,
    RoomMessage,
    StreamOutcome,
)
from .state import Stats

__all__ = [
    "ChatMessage",
    "Client",
    "ClientError",
    "ClientTimeout",
    "Closed",
    "ConnectFailed",
    "Connected",
    "Disconnected",
    "Error",
    "Event",
    "Expiring",
    "JoinFailed",
    "Joined",
    "Left",
    "Lost",
    "Member",
    "MemberList",
    "Other",
    "Ping",
    "Position",
    "Reconnected",
    "Rejected",
    "RoomMessage",
    "Stats",
    "StreamOutcome",
    "TokenSource",
    "open_client",
]
