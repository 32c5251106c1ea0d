"""The sans-IO core: wire format, session rules, room table, presence and position rules.

Plain synchronous code that returns values; it never imports trio, quart,
hypercorn or redis (``tests/unit/test_layers.py`` checks), so every rule here is
unit-tested without sockets or an event loop.
"""
