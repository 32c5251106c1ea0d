"""End-to-end: the web demo page in two headless Chromium pages on two servers.

A second case puts a TCP proxy (``wsproto_trio.chaos.proxy``) between page A and
its server and cuts it while page B talks: page A must reconnect, recover what
was said meanwhile (replayed, once each) and say so on the page.

Two in-process servers share one real redis-server. Page A loads ``/`` from
server 0 and page B from server 1, so everything either page sees from the
other has crossed Redis. The servers run in this trio run; the browser is
driven with Playwright's sync API from one worker thread
(``trio.to_thread.run_sync``), since Playwright's async API needs asyncio.

Debian's ``chromium`` is used through ``executable_path`` (``scripts/test-browser``
installs it); Playwright's own browser download is never used.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.from_thread

from wsproto_trio.chaos.proxy import Proxy

from ..support import RedisProcess, open_cluster, wait_until, wait_until_async

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000  # every wait in the browser script
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
SCREENSHOT = ARTIFACTS / "web-demo.png"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ROOM = "demo"


def drive_browsers(
    url_a: str, server_a: str, url_b: str, server_b: str, screenshot: Path
) -> list[str]:
    """The whole browser script, run in a worker thread; returns page errors seen."""
    from playwright.sync_api import ConsoleMessage, Locator, Page, Response, expect, sync_playwright

    problems: list[str] = []

    def watch(name: str, page: Page) -> None:
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda exc: problems.append(f"{name} page error: {exc}"))

        def console(msg: ConsoleMessage) -> None:
            # Chromium asks for /favicon.ico by itself; the app has none (404).
            if msg.location.get("url", "").endswith("/favicon.ico"):
                return
            if msg.type == "error":
                problems.append(f"{name} console error: {msg.text} at {msg.location}")

        page.on("console", console)

        def response(resp: Response) -> None:
            if resp.status >= 400:
                problems.append(f"{name} HTTP {resp.status}: {resp.url}")

        page.on("response", response)

    def open_demo(name: str, url: str, server: str) -> tuple[Page, str]:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        watch(name, page)
        page.goto(url + "/", timeout=WAIT_MS)
        expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=WAIT_MS)
        me = page.locator("#me")
        expect(me).to_have_attribute("data-user", UUID, timeout=WAIT_MS)
        expect(me).to_contain_text(f"on server {server}", timeout=WAIT_MS)
        user = me.get_attribute("data-user", timeout=WAIT_MS)
        assert user is not None and UUID.match(user), user
        return page, user

    def room(page: Page) -> Locator:
        return page.locator(f'article.room[data-room="{ROOM}"]')

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=WAIT_MS
        )
        try:
            page_a, user_a = open_demo("A", url_a, server_a)
            page_b, user_b = open_demo("B", url_b, server_b)
            assert user_a != user_b

            # Global chat: A says something, both pages show it.
            page_a.fill("#chat-input", "hello from A")
            page_a.press("#chat-input", "Enter")
            for page in (page_a, page_b):
                expect(page.locator("#chat-log li").filter(has_text="hello from A")).to_have_count(
                    1, timeout=WAIT_MS
                )
            expect(page_a.locator("#chat-input")).to_have_value("", timeout=WAIT_MS)

            # Rooms: A joins, then B; both panels list both users.
            page_a.fill("#room-input", ROOM)
            page_a.click("#join-btn")
            expect(room(page_a)).to_have_count(1, timeout=WAIT_MS)
            expect(room(page_a).locator(f'ul.members li[data-user="{user_a}"]')).to_have_count(
                1, timeout=WAIT_MS
            )
            page_b.fill("#room-input", ROOM)
            page_b.click("#join-btn")
            for page in (page_a, page_b):
                members = room(page).locator("ul.members li[data-user]")
                for user in (user_a, user_b):
                    expect(members.and_(page.locator(f'[data-user="{user}"]'))).to_have_count(
                        1, timeout=WAIT_MS
                    )
                expect(members).to_have_count(2, timeout=WAIT_MS)

            # A room message from A reaches B (and A) across Redis.
            room(page_a).locator("input.room-input").fill("hi demo room")
            room(page_a).locator("button.send-btn").click()
            for page in (page_b, page_a):
                line = room(page).locator(f'ul.messages li[data-user="{user_a}"]')
                expect(line.filter(has_text="hi demo room")).to_have_count(1, timeout=WAIT_MS)

            # B presses the Ping 2 button (GET /ping2 on server 1): both see Ping 2.
            page_b.click("#ping2")
            for page in (page_a, page_b):
                ping = page.locator('#ping-log li[data-ping="2"]')
                expect(ping).to_have_count(1, timeout=WAIT_MS)
                expect(ping).to_contain_text("Ping 2", timeout=WAIT_MS)

            # No errors were reported by the server to either page.
            for page in (page_a, page_b):
                expect(page.locator("#error-log li")).to_have_count(0, timeout=WAIT_MS)

            # B closes its page: A sees LeftRoom, B drops out of A's member list.
            page_b.close()
            members_a = room(page_a).locator("ul.members li[data-user]")
            expect(members_a.and_(page_a.locator(f'[data-user="{user_b}"]'))).to_have_count(
                0, timeout=WAIT_MS
            )
            expect(members_a).to_have_count(1, timeout=WAIT_MS)
            expect(room(page_a).locator("ul.messages li.system").last).to_have_text(
                f"{user_b[:8]} left", timeout=WAIT_MS
            )
            expect(page_a.locator("#status")).to_have_attribute(
                "data-state", "open", timeout=WAIT_MS
            )

            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page_a.screenshot(path=str(screenshot), full_page=True, timeout=WAIT_MS)
            assert screenshot.is_file() and screenshot.stat().st_size > 0
            page_a.close()
        finally:
            browser.close()
    return problems


@pytest.fixture
def chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test-browser installs Debian's chromium")


@pytest.fixture
def screenshot(chromium: None) -> Path:
    """Where page A's screenshot goes; checks the browser first."""
    SCREENSHOT.unlink(missing_ok=True)
    return SCREENSHOT


async def test_two_pages_on_two_servers(
    redis_server: RedisProcess, screenshot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    began = time.monotonic()
    async with open_cluster(redis_server.url, 2) as servers:
        a, b = servers
        ids = (a.app.settings.server_id, b.app.settings.server_id)
        assert a.http != b.http and ids[0] != ids[1]
        problems = await trio.to_thread.run_sync(
            partial(drive_browsers, a.http, ids[0], b.http, ids[1], screenshot)
        )
        # Both pages are closed now: no connection, room or presence entry is left.
        await wait_until(lambda: all(not s.app.hub.connections for s in servers))
        await wait_until(lambda: all(not s.app.hub.rooms.rooms() for s in servers))

        async def room_empty() -> bool:
            return not await servers[0].app.hub.broker.members(ROOM)

        await wait_until_async(room_empty)
    assert problems == [], problems
    with capsys.disabled():
        print(f"\nweb demo screenshot: {screenshot} ({time.monotonic() - began:.1f}s)")


RECOVERY_ROOM = "recover"


def drive_recovery(
    url_a: str, url_b: str, cut: Callable[[], None], restore: Callable[[], None]
) -> list[str]:
    """Page A's connection is cut (a proxy in front of its server) while page B
    talks; once it is back, page A shows what it missed and says it recovered it."""
    from playwright.sync_api import Page, expect, sync_playwright

    problems: list[str] = []

    def open_page(name: str, url: str) -> Page:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda exc: problems.append(f"{name} page error: {exc}"))
        page.goto(url + "/", timeout=WAIT_MS)
        expect(page.locator("#me")).to_have_attribute("data-user", UUID, timeout=WAIT_MS)
        page.fill("#room-input", RECOVERY_ROOM)
        page.click("#join-btn")
        panel = page.locator(f'article.room[data-room="{RECOVERY_ROOM}"]')
        expect(panel).to_have_attribute("data-joined", "true", timeout=WAIT_MS)
        return page

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=WAIT_MS
        )
        try:
            page_a = open_page("A", url_a)
            page_b = open_page("B", url_b)
            room_a = page_a.locator(f'article.room[data-room="{RECOVERY_ROOM}"]')
            room_b = page_b.locator(f'article.room[data-room="{RECOVERY_ROOM}"]')
            room_b.locator("input.room-input").fill("before the cut")
            room_b.locator("button.send-btn").click()
            expect(
                room_a.locator("ul.messages li").filter(has_text="before the cut")
            ).to_have_count(1, timeout=WAIT_MS)

            trio.from_thread.run_sync(cut)
            expect(page_a.locator("#status")).to_have_attribute(
                "data-state", "reconnecting", timeout=WAIT_MS
            )
            said = [f"missed {n}" for n in range(3)]
            for text in said:
                room_b.locator("input.room-input").fill(text)
                room_b.locator("button.send-btn").click()
                expect(room_b.locator("ul.messages li").filter(has_text=text)).to_have_count(
                    1, timeout=WAIT_MS
                )
            for text in ("chat missed 0", "chat missed 1"):
                page_b.fill("#chat-input", text)
                page_b.press("#chat-input", "Enter")
                expect(page_b.locator("#chat-log li").filter(has_text=text)).to_have_count(
                    1, timeout=WAIT_MS
                )
            trio.from_thread.run_sync(restore)

            recovery = page_a.locator("#recovery")
            expect(recovery).to_have_attribute("data-recovered", "5", timeout=WAIT_MS)
            expect(recovery).to_have_text("reconnected, 5 messages recovered", timeout=WAIT_MS)
            expect(page_a.locator("#status")).to_have_attribute("data-state", "open")
            replayed = room_a.locator('ul.messages li[data-replayed="true"]')
            expect(replayed).to_have_count(3, timeout=WAIT_MS)
            for index, text in enumerate(said):
                expect(replayed.nth(index)).to_contain_text(text)
            expect(page_a.locator('#chat-log li[data-replayed="true"]')).to_have_count(2)
            # Nothing twice: one line per message, live traffic flows again.
            expect(
                room_a.locator("ul.messages li").filter(has_text="before the cut")
            ).to_have_count(1)
            room_b.locator("input.room-input").fill("after the cut")
            room_b.locator("button.send-btn").click()
            expect(room_a.locator("ul.messages li").filter(has_text="after the cut")).to_have_count(
                1, timeout=WAIT_MS
            )
            page_a.close()
            page_b.close()
        finally:
            browser.close()
    return problems


async def test_a_cut_page_reconnects_and_recovers(
    redis_server: RedisProcess, chromium: None
) -> None:
    async with open_cluster(redis_server.url, 2) as (a, b), trio.open_nursery() as nursery:
        proxy = Proxy(int(a.http.rsplit(":", 1)[1]))
        port = await nursery.start(proxy.serve)
        problems = await trio.to_thread.run_sync(
            partial(drive_recovery, f"http://127.0.0.1:{port}", b.http, proxy.cut, proxy.restore)
        )
        nursery.cancel_scope.cancel()
    assert problems == [], problems
