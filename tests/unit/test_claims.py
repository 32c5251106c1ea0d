"""core.claims: claim shapes, room patterns, permissions, refresh and expiry timing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsproto_trio.core.claims import (
    MAX_INFO_BYTES,
    Claims,
    Deadlines,
    Pattern,
    Patterns,
    deadlines,
    from_payload,
    refresh,
)
from wsproto_trio.errors import InvalidToken, TokenRejected


def rejected(payload: dict[str, object]) -> str:
    with pytest.raises(TokenRejected) as info:
        from_payload(payload)
    return info.value.reason


# Patterns -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "room", "expected"),
    [
        ("lobby", "lobby", True),
        ("lobby", "lobby2", False),
        ("lobby", "Lobby", False),  # case matters
        ("*", "anything at all", True),
        ("*", "x", True),
        ("team-*", "team-", True),  # the empty run
        ("team-*", "team-a", True),
        ("team-*", "team", False),
        ("team-*", "TEAM-a", False),
        ("*-ops", "db-ops", True),
        ("*-ops", "db-ops-x", False),
        ("a*b*c", "abc", True),
        ("a*b*c", "aXbYc", True),
        ("a*b*c", "acb", False),
        ("a*a", "a", False),  # prefix and suffix may not overlap
        ("a*a", "aa", True),
        ("**", "", True),
        ("*b*", "abc", True),
        ("*b*", "ac", False),
        ("a?c", "abc", False),  # ? is literal
        ("a?c", "a?c", True),
        ("[ab]", "a", False),  # brackets are literal
        ("[ab]", "[ab]", True),
        ("a.c", "abc", False),  # so is a dot
        ("a\\*", "a\\xyz", True),  # no escapes: the backslash is literal
        ("r/*/x", "r//x", True),
        ("", "", True),
        ("", "a", False),
    ],
)
def test_pattern(pattern: str, room: str, expected: bool) -> None:
    assert Pattern(pattern).matches(room) is expected
    assert Patterns([pattern]).matches(room) is expected


def glob_reference(pattern: str, name: str) -> bool:
    """A plain dynamic-programming matcher for ``*`` globs, to check ours against."""
    reachable = {0}
    for char in pattern:
        if char == "*":
            start = min(reachable) if reachable else len(name) + 1
            reachable = set(range(start, len(name) + 1))
        else:
            reachable = {i + 1 for i in reachable if i < len(name) and name[i] == char}
    return len(name) in reachable


@given(st.text("ab*", max_size=8), st.text("ab", max_size=10))
def test_pattern_agrees_with_a_reference_matcher(pattern: str, name: str) -> None:
    assert Pattern(pattern).matches(name) is glob_reference(pattern, name)


def test_many_stars_match_in_linear_time() -> None:
    # A backtracking matcher would take ages here; ours scans left to right.
    pattern = Pattern("*a" * 50 + "*b")
    assert not pattern.matches("a" * 100)


def test_patterns_any_matches() -> None:
    patterns = Patterns(["lobby", "team-*", "*-ops"])
    assert patterns.matches("lobby")
    assert patterns.matches("team-x")
    assert patterns.matches("db-ops")
    assert not patterns.matches("random")
    assert not Patterns([]).matches("lobby")


# Shapes ---------------------------------------------------------------------------


def test_minimal_claims() -> None:
    claims = from_payload({"sub": "alice"})
    assert claims == Claims(sub="alice")
    assert claims.exp is None and claims.rooms is None and claims.send is None
    assert claims.chat is True and claims.info is None


def test_full_claims() -> None:
    claims = from_payload(
        {
            "sub": "alice",
            "exp": 2000000000,
            "rooms": ["team-*"],
            "send": ["team-a"],
            "chat": False,
            "info": {"name": "Alice"},
            "aud": "ignored-here",
        }
    )
    assert claims.exp == 2000000000
    assert claims.rooms == Patterns(["team-*"])
    assert claims.send == Patterns(["team-a"])
    assert claims.chat is False
    assert claims.info == {"name": "Alice"}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({}, "no valid sub"),
        ({"sub": ""}, "no valid sub"),
        ({"sub": 42}, "no valid sub"),
        ({"sub": None}, "no valid sub"),
        ({"sub": ["alice"]}, "no valid sub"),
        ({"sub": "x" * 201}, "no valid sub"),
        ({"sub": "\ud800"}, "no valid sub"),
        ({"sub": "a", "rooms": "team-*"}, "'rooms' must be a list of strings"),
        ({"sub": "a", "rooms": None}, "'rooms' must be a list of strings"),
        ({"sub": "a", "rooms": ["a", 1]}, "'rooms' must be a list of strings"),
        ({"sub": "a", "rooms": {"a": 1}}, "'rooms' must be a list of strings"),
        ({"sub": "a", "send": "x"}, "'send' must be a list of strings"),
        ({"sub": "a", "send": [None]}, "'send' must be a list of strings"),
        ({"sub": "a", "chat": "false"}, "'chat' must be true or false"),
        ({"sub": "a", "chat": 0}, "'chat' must be true or false"),
        ({"sub": "a", "chat": None}, "'chat' must be true or false"),
        ({"sub": "a", "info": "Alice"}, "'info' must be a JSON object"),
        ({"sub": "a", "info": ["Alice"]}, "'info' must be a JSON object"),
        ({"sub": "a", "info": None}, "'info' must be a JSON object"),
        ({"sub": "a", "info": {"x": "y" * 1100}}, "more than 1024"),
        ({"sub": "a", "info": {"x": "\udc00"}}, "'info' is not valid Unicode"),
        ({"sub": "a", "exp": "soon"}, "'exp' must be a number"),
        ({"sub": "a", "exp": True}, "'exp' must be a number"),
    ],
)
def test_wrong_shapes_refuse_the_token(payload: dict[str, object], reason: str) -> None:
    assert reason in rejected(payload)


def test_wrong_shape_reasons_say_so() -> None:
    assert rejected({"sub": "a", "chat": 1}).startswith("claims of the wrong shape")


def test_sub_bounds() -> None:
    assert from_payload({"sub": "x"}).sub == "x"
    assert from_payload({"sub": "x" * 200}).sub == "x" * 200


def test_info_limit_is_in_utf8_bytes_of_the_compact_encoding() -> None:
    # {"x":"..."} is 8 bytes around the value; each "é" is 2 bytes in UTF-8.
    fits = {"x": "é" * ((MAX_INFO_BYTES - 8) // 2)}
    assert from_payload({"sub": "a", "info": fits}).info == fits
    too_big = {"x": "é" * ((MAX_INFO_BYTES - 8) // 2 + 1)}
    assert "more than 1024" in rejected({"sub": "a", "info": too_big})


# Permissions and precedence -------------------------------------------------------


def test_no_rooms_claim_allows_every_room() -> None:
    claims = from_payload({"sub": "a"})
    assert claims.may_join("anything") and claims.may_send("anything") and claims.may_chat()


def test_empty_rooms_allows_none_and_send_follows() -> None:
    claims = from_payload({"sub": "a", "rooms": []})
    assert not claims.may_join("lobby")
    assert not claims.may_send("lobby")
    assert claims.may_chat()


def test_send_defaults_to_rooms() -> None:
    claims = from_payload({"sub": "a", "rooms": ["team-*"]})
    assert claims.may_send("team-a")
    assert not claims.may_send("lobby")


def test_send_overrides_rooms() -> None:
    claims = from_payload({"sub": "a", "rooms": ["team-*", "lobby"], "send": ["team-*"]})
    assert claims.may_join("lobby") and not claims.may_send("lobby")
    assert claims.may_join("team-a") and claims.may_send("team-a")


def test_send_without_rooms_restricts_only_sending() -> None:
    claims = from_payload({"sub": "a", "send": []})
    assert claims.may_join("lobby") and not claims.may_send("lobby")


def test_chat_false_forbids_only_the_chat() -> None:
    claims = from_payload({"sub": "a", "chat": False})
    assert not claims.may_chat()
    assert claims.may_join("lobby") and claims.may_send("lobby")


def test_anonymous_may_do_nothing() -> None:
    claims = Claims.anonymous()
    assert claims.is_anonymous and claims.sub is None and claims.exp is None
    assert not claims.may_join("lobby")
    assert not claims.may_send("lobby")
    assert not claims.may_chat()


def test_identity_fields() -> None:
    plain = from_payload({"sub": "alice"})
    assert plain.subject() == {"sub": "alice"}
    assert plain.profile() == {"sub": "alice"}
    rich = from_payload({"sub": "alice", "info": {"name": "Alice"}})
    assert rich.subject() == {"sub": "alice"}
    assert rich.profile() == {"sub": "alice", "info": {"name": "Alice"}}


# Refresh --------------------------------------------------------------------------


def test_refresh_same_subject_keeps_allowed_rooms() -> None:
    old = from_payload({"sub": "alice"})
    new = from_payload({"sub": "alice", "rooms": ["team-*"]})
    assert refresh(old, new, {"team-a", "lobby", "team-b", "ops"}) == ["lobby", "ops"]


def test_refresh_wider_claims_leave_nothing() -> None:
    old = from_payload({"sub": "alice", "rooms": ["team-a"]})
    new = from_payload({"sub": "alice"})
    assert refresh(old, new, {"team-a"}) == []


def test_refresh_send_narrowing_does_not_leave() -> None:
    old = from_payload({"sub": "alice"})
    new = from_payload({"sub": "alice", "send": []})
    assert refresh(old, new, {"lobby"}) == []


def test_refresh_other_subject_is_invalid_token() -> None:
    old = from_payload({"sub": "alice"})
    with pytest.raises(InvalidToken, match="another subject"):
        refresh(old, from_payload({"sub": "mallory"}), {"lobby"})


def test_refresh_of_an_anonymous_connection_is_invalid_token() -> None:
    with pytest.raises(InvalidToken, match="anonymous"):
        refresh(Claims.anonymous(), from_payload({"sub": "alice"}), set())


# Expiry timing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exp", "now", "notice", "expected"),
    [
        (1000.0, 900.0, 30.0, Deadlines(notice=70.0, close=100.0)),
        (1000.0, 980.0, 30.0, Deadlines(notice=0.0, close=20.0)),  # less left: at once
        (1000.0, 970.0, 30.0, Deadlines(notice=0.0, close=30.0)),
        (1000.0, 1000.0, 30.0, Deadlines(notice=0.0, close=0.0)),
        (1000.0, 1010.0, 30.0, Deadlines(notice=0.0, close=0.0)),  # already past
    ],
)
def test_deadlines(exp: float, now: float, notice: float, expected: Deadlines) -> None:
    assert deadlines(exp, now, notice) == expected


def test_no_exp_no_deadlines() -> None:
    assert deadlines(None, 1000.0, 30.0) is None
