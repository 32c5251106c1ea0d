"""The server edge: the fan-out hub, one websocket connection, the Hypercorn guard."""
