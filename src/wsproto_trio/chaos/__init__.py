"""``wsproto-trio chaos``: a cluster, clients and faults, and what was delivered."""
