"""The viewer, login and users pages in real headless Chromium, against a running daemon
and demo camera (see ``conftest.py``). Every test also fails on any console error."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import OUTPUT, USERS, Pages, Stack

pytestmark = pytest.mark.browser

CONTROL_IDS = ["#btn-up", "#btn-down", "#btn-left", "#btn-right", "#btn-center"]
SLIDER_IDS = ["#pan-slider", "#tilt-slider"]
SNAPSHOT_NAME = re.compile(r"robocam-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.jpg")

# Page scripts below are functions, never bare expressions: Playwright evaluates an
# expression with eval(), which the pages' Content-Security-Policy forbids.
FRAMES_AT_LEAST = "(n) => Number(document.getElementById('video').dataset.frames) >= n"

#: Open the viewer socket from a page and report how it ended.
SOCKET_PROBE = """
(url) => new Promise((resolve) => {
  const ws = new WebSocket(url);
  ws.onopen = () => { ws.close(); resolve('open'); };
  ws.onclose = (event) => resolve(`closed ${event.code}`);
})
"""


def frames(page: Any) -> int:
    return int(page.locator("#video").get_attribute("data-frames") or 0)


def wait_for_new_frames(page: Any, count: int = 3) -> int:
    """Wait until ``count`` more frames have been drawn; returns the new total."""
    target = frames(page) + count
    page.wait_for_function(FRAMES_AT_LEAST, arg=target)
    return frames(page)


def expect_position(page: Any, x: int, y: int) -> None:
    expect(page.locator("#pos-x")).to_have_text(str(x))
    expect(page.locator("#pos-y")).to_have_text(str(y))


def expect_live(page: Any) -> None:
    expect(page.locator("#camera-status")).to_have_text("Camera online")
    expect(page.locator("#offline-overlay")).to_be_hidden()
    wait_for_new_frames(page)


def test_login_rejects_a_wrong_password_then_shows_live_video(pages: Pages) -> None:
    page = pages.new_page()
    page.goto("/")
    page.wait_for_url(re.compile(r"/login"))
    expect(page.locator("#login-error")).to_have_count(0)

    # The 401 answer to a failed login is the contract; Chromium reports every 4xx document.
    pages.expect_console_error(r"status of 401")
    page.fill("#username", "alice")
    page.fill("#password", "not-the-password")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_be_visible()
    expect(page.locator("#login-error")).not_to_be_empty()
    expect(page.locator("#username")).to_have_value("alice")

    page.fill("#password", USERS["alice"][0])
    page.click("#login-submit")
    page.wait_for_url(f"{pages.stack.url}/")
    expect(page.locator("#user-name")).to_have_text("alice")
    expect(page.locator("#admin-link")).to_be_visible()
    expect_live(page)

    # The picture changes: more frames drawn, and different pixels (the demo camera's
    # frames carry a clock).
    before = page.evaluate("() => document.getElementById('video').toDataURL('image/png')")
    wait_for_new_frames(page, 5)
    after = page.evaluate("() => document.getElementById('video').toDataURL('image/png')")
    assert before != after
    assert page.evaluate("() => document.getElementById('video').width") == 640

    expect(page.locator("#fps")).to_have_text(re.compile(r"^\d+\.\d$"))
    page.wait_for_function("() => Number(document.getElementById('fps').textContent) > 0")
    expect(page.locator("#frame-age")).to_have_text(re.compile(r"^\d+ ms$|^\d+\.\d s$"))
    expect(page.locator("#viewer-count")).to_have_text(re.compile(r"^\d+$"))


def test_buttons_keys_and_sliders_move_the_camera(pages: Pages) -> None:
    page = pages.login("bob")
    expect(page.locator("#btn-up")).to_be_enabled()
    expect(page.locator("#control-reason")).to_be_hidden()

    page.click("#btn-center")
    expect_position(page, 90, 45)

    page.click("#btn-up")  # the firmware's "up" lowers y
    expect_position(page, 90, 35)
    assert pages.stack.camera_position() == (90, 35)

    page.keyboard.press("ArrowLeft")  # ... and "left" raises x
    expect_position(page, 100, 35)
    assert pages.stack.camera_position() == (100, 35)

    page.keyboard.press("ArrowDown")
    expect_position(page, 100, 45)

    # A slider sends one position_command when released (here: the change event).
    page.locator("#pan-slider").evaluate(
        "(slider) => { slider.value = '120';"
        " slider.dispatchEvent(new Event('change', {bubbles: true})); }"
    )
    expect_position(page, 120, 45)
    assert pages.stack.camera_position() == (120, 45)
    expect(page.locator("#pan-slider")).to_have_value("120")

    page.keyboard.press("c")
    expect_position(page, 90, 45)
    expect(page.locator("#pan-slider")).to_have_value("90")
    expect(page.locator("#tilt-slider")).to_have_value("45")

    light = page.locator("#light-toggle")
    expect(light).to_have_attribute("aria-pressed", "false")
    light.click()
    expect(light).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("l")
    expect(light).to_have_attribute("aria-pressed", "false")


#: A slow phone: every JPEG takes 300 ms longer to decode than frames arrive (~10 a second).
SLOW_DECODER = """
const decode = window.createImageBitmap.bind(window);
window.createImageBitmap = async (...args) => {
  await new Promise((resolve) => setTimeout(resolve, 300));
  return decode(...args);
};
"""

FRAME_AGE_MS = """
() => {
  const text = document.getElementById('frame-age').textContent;
  const number = parseFloat(text);
  return text.endsWith(' ms') ? number : number * 1000;
}
"""


def test_a_slow_device_shows_the_newest_frame_instead_of_falling_behind(pages: Pages) -> None:
    context = pages.new_context()
    context.add_init_script(SLOW_DECODER)
    page = pages.login("bob", pages.new_page(context))
    expect(page.locator("#camera-status")).to_have_text("Camera online")
    wait_for_new_frames(page, 12)
    # A queue would fall seconds behind by now (frames come three times as fast as they
    # are decoded); keeping only the newest pending frame keeps what is shown fresh.
    ages = []
    for _ in range(6):
        ages.append(page.evaluate(FRAME_AGE_MS))
        page.wait_for_timeout(200)
    assert max(ages) < 1500, ages


def test_a_second_viewer_sees_the_count_and_follows_the_position(pages: Pages) -> None:
    first = pages.login("bob")
    expect(first.locator("#viewer-count")).to_have_text("1")
    first.click("#btn-center")
    expect_position(first, 90, 45)

    second = pages.login("alice")
    expect(second.locator("#viewer-count")).to_have_text("2")
    expect(first.locator("#viewer-count")).to_have_text("2")
    expect_position(second, 90, 45)

    first.click("#btn-right")  # "right" lowers x
    expect_position(first, 80, 45)
    expect_position(second, 80, 45)
    expect(second.locator("#pan-slider")).to_have_value("80")

    first.click("#light-toggle")
    expect(second.locator("#light-toggle")).to_have_attribute("aria-pressed", "true")
    second.click("#light-toggle")
    expect(first.locator("#light-toggle")).to_have_attribute("aria-pressed", "false")

    second.context.close()
    expect(first.locator("#viewer-count")).to_have_text("1")


def test_camera_going_away_shows_the_overlay_and_video_comes_back(
    pages: Pages, stack: Stack
) -> None:
    page = pages.login("bob")
    expect_live(page)
    try:
        stack.stop_camera()
        overlay = page.locator("#offline-overlay")
        expect(overlay).to_be_visible()
        expect(overlay).to_have_attribute("data-reason", "camera")
        expect(overlay).to_contain_text("Camera offline")
        expect(page.locator("#camera-status")).to_have_text("Camera offline")
        expect(page.locator("#btn-up")).to_be_disabled()
        expect(page.locator("#control-reason")).to_contain_text("offline")
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "viewer-camera-offline-1366x768.png"))

        stack.start_camera()
        expect(overlay).to_be_hidden(timeout=30_000)
        expect_live(page)
        expect(page.locator("#btn-up")).to_be_enabled()
        expect(page.locator("#control-reason")).to_be_hidden()
    finally:
        if stack.camera is None:
            stack.start_camera()


def test_losing_the_proxy_shows_the_overlay_and_the_page_reconnects(
    pages: Pages, stack: Stack
) -> None:
    page = pages.login("bob")
    expect_live(page)
    # While the proxy is down, Chromium reports each failed reconnection attempt.
    pages.expect_console_error(r"WebSocket connection to .*/ws' failed")
    pages.expect_console_error(r"ERR_CONNECTION_REFUSED")
    try:
        stack.stop_daemon()
        overlay = page.locator("#offline-overlay")
        expect(overlay).to_be_visible()
        expect(overlay).to_have_attribute("data-reason", "link")
        expect(overlay).to_contain_text("Reconnecting")
        expect(page.locator("#camera-status")).to_have_text("Disconnected")
        expect(page.locator("#btn-up")).to_be_disabled()
    finally:
        if stack.daemon is None:
            stack.start_daemon()
    # Same session (it is in the database), same page: no reload, no new login.
    expect(overlay).to_be_hidden(timeout=30_000)
    expect_live(page)
    expect(page.locator("#btn-up")).to_be_enabled()
    assert page.url == f"{stack.url}/"


def test_logout_returns_to_login_and_the_old_session_is_dead(pages: Pages) -> None:
    page = pages.login("bob")
    expect_live(page)
    old_cookies = page.context.cookies()
    page.click("#logout")
    page.wait_for_url(re.compile(r"/login"))
    expect(page.locator("#login-submit")).to_be_visible()

    stale = pages.new_context()
    stale.add_cookies(old_cookies)
    probe = pages.new_page(stale)
    probe.goto("/health")
    # The refused handshake is what this checks; Chromium logs it as an error.
    pages.expect_console_error(r"WebSocket connection to .*/ws' failed")
    socket_url = pages.stack.url.replace("http://", "ws://") + "/ws"
    assert probe.evaluate(SOCKET_PROBE, socket_url) == "closed 1006"
    probe.goto("/")
    probe.wait_for_url(re.compile(r"/login"))


def test_a_session_ended_elsewhere_sends_the_page_to_login(pages: Pages, stack: Stack) -> None:
    page = pages.login("dave")
    expect_live(page)
    try:
        stack.cli("disable", "dave")
        # CONTRACT §4: the daemon closes the sockets of ended sessions within 10 s.
        page.wait_for_url(re.compile(r"/login"), timeout=20_000)
    finally:
        stack.cli("enable", "dave")


def test_a_watcher_without_control_sees_disabled_controls_and_why(pages: Pages) -> None:
    page = pages.login("carol")
    expect_live(page)
    reason = page.locator("#control-reason")
    expect(reason).to_be_visible()
    expect(reason).to_contain_text("permission")
    for selector in [*CONTROL_IDS, *SLIDER_IDS, "#light-toggle"]:
        expect(page.locator(selector)).to_be_disabled()
    expect(page.locator("#snapshot")).to_be_enabled()
    expect(page.locator("#admin-link")).to_have_count(0)

    page.keyboard.press("ArrowUp")
    expect(page.locator("#toasts .toast")).to_contain_text("permission")

    # An admin grants control on the users page: the watcher's socket is closed with
    # "permissions changed", the page reconnects at once and the controls come alive.
    admin = pages.login("alice")
    admin.goto("/admin/users")
    carol = admin.locator("tr[data-username=carol]")
    carol.get_by_role("button", name=re.compile("Allow control")).click()
    admin.wait_for_url(re.compile(r"/admin/users"))
    expect(admin.locator("#admin-message")).to_contain_text("carol")
    expect(page.locator("#btn-up")).to_be_enabled()
    expect(reason).to_be_hidden()
    admin.locator("tr[data-username=carol]").get_by_role(
        "button", name=re.compile("Watch only")
    ).click()
    expect(page.locator("#btn-up")).to_be_disabled()
    expect(reason).to_contain_text("permission")


def test_snapshot_saves_the_current_jpeg_and_fullscreen_toggles(pages: Pages) -> None:
    page = pages.login("bob")
    expect_live(page)
    with page.expect_download() as info:
        page.click("#snapshot")
    download = info.value
    assert SNAPSHOT_NAME.fullmatch(download.suggested_filename)
    jpeg = Path(download.path()).read_bytes()
    assert jpeg[:2] == b"\xff\xd8"
    assert jpeg[-2:] == b"\xff\xd9"

    page.click("#fullscreen")
    page.wait_for_function("() => document.fullscreenElement?.id === 'stage'")
    expect(page.locator("#fullscreen")).to_have_attribute("aria-label", "Exit fullscreen")
    page.click("#fullscreen")
    page.wait_for_function("() => document.fullscreenElement === null")
    expect(page.locator("#fullscreen")).to_have_attribute("aria-label", "Fullscreen")


UNLABELLED_BUTTONS = """
() => [...document.querySelectorAll('button, a, input:not([type=hidden])')]
  .filter((el) => {
    const label = el.getAttribute('aria-label') || el.textContent.trim()
      || (el.id && document.querySelector(`label[for="${el.id}"]`)?.textContent.trim());
    return !label;
  })
  .map((el) => el.outerHTML.slice(0, 80))
"""

OVERFLOWING = """
() => {
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')].filter((el) => {
    const box = el.getBoundingClientRect();
    return box.width > 0 && (box.right > width + 1 || box.left < -1)
      && !el.closest('.visually-hidden, .table-wrap, .skip-link');
  });
  return {scroll: document.documentElement.scrollWidth, width,
          wide: wide.slice(0, 5).map((el) => el.id || el.className)};
}
"""


@pytest.mark.parametrize(("width", "height"), [(360, 740), (1366, 768), (1920, 1080)])
def test_viewer_layout_at_phone_and_desktop_sizes(pages: Pages, width: int, height: int) -> None:
    page = pages.login("alice", viewport={"width": width, "height": height})
    expect_live(page)
    expect(page.locator("#pos-x")).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator("#fps")).to_have_text(re.compile(r"^\d+\.\d$"))

    layout = page.evaluate(OVERFLOWING)
    assert layout["scroll"] <= width, layout
    assert layout["wide"] == [], layout
    assert page.evaluate(UNLABELLED_BUTTONS) == []
    for selector in ["#video", "#btn-up", "#btn-center", "#light-toggle", "#logout"]:
        expect(page.locator(selector)).to_be_visible()
    # Touch targets of the d-pad are at least 44 CSS pixels.
    box = page.locator("#btn-up").bounding_box()
    assert box is not None and box["width"] >= 44 and box["height"] >= 44
    # The video fills the width on a phone and stays whole on screen on a desktop.
    video = page.locator("#video").bounding_box()
    assert video is not None
    if width < 600:
        assert video["width"] >= width - 32
    else:
        assert video["y"] + video["height"] <= height

    OUTPUT.mkdir(exist_ok=True)
    page.mouse.move(0, height - 1)
    page.screenshot(path=str(OUTPUT / f"viewer-{width}x{height}.png"))
    # docs/screenshot.png shows several cameras: test_cameras_pages.py takes it.


def test_focus_is_visible_on_keyboard_navigation(pages: Pages) -> None:
    page = pages.login("bob")
    expect_live(page)
    page.locator("#btn-up").focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    outline = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return [document.activeElement.id, s.outlineStyle, s.outlineWidth]; }"
    )
    assert outline[0] == "btn-up"
    assert outline[1] == "solid" and outline[2] != "0px", outline
    # Enter on a focused d-pad button moves the camera, like a click.
    page.click("#btn-center")
    expect_position(page, 90, 45)
    page.locator("#btn-up").focus()
    page.keyboard.press("Enter")
    expect_position(page, 90, 35)


def test_server_errors_show_as_a_toast(pages: Pages) -> None:
    page = pages.login("bob")
    expect_live(page)
    # Out of the camera's range: the proxy refuses it with an error message.
    page.evaluate(
        "() => { const s = document.getElementById('tilt-slider');"
        " s.max = '500'; s.value = '400'; s.dispatchEvent(new Event('change')); }"
    )
    toast = page.locator("#toasts .toast-error")
    expect(toast).to_be_visible()
    expect(toast).not_to_be_empty()
    expect(page.locator("#toasts")).to_have_attribute("aria-live", "polite")
    expect(toast).to_have_count(0, timeout=10_000)  # it goes away by itself


def test_login_and_users_pages(pages: Pages) -> None:
    page = pages.new_page(viewport={"width": 360, "height": 740})
    page.goto("/login")
    expect(page.locator("#username")).to_be_focused()
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "login-360x740.png"))

    # Someone who is not an admin gets the error page (403 is the answer, on purpose).
    pages.expect_console_error(r"status of 403")
    watcher = pages.login("bob")
    watcher.goto("/admin/users")
    expect(watcher.locator("#error-status")).to_have_text("403")
    expect(watcher.locator("h1")).not_to_be_empty()

    admin = pages.login("alice")
    admin.click("#admin-link")
    admin.wait_for_url(re.compile(r"/admin/users$"))
    rows = admin.locator("table.users tbody tr")
    for name in USERS:
        expect(rows.filter(has_text=name).first).to_be_visible()
    # The epoch timestamps are shown as dates.
    expect(admin.locator("time.epoch").first).to_have_text(re.compile(r"\d{4}|\d{1,2}:\d\d"))

    admin.fill("#new-username", "erin")
    admin.fill("#new-password", "erin-Secret-5")
    admin.uncheck("#new-can-control")
    admin.click("#add-user button[type=submit]")
    admin.wait_for_url(re.compile(r"/admin/users"))
    erin = admin.locator("tr[data-username=erin]")
    expect(erin).to_contain_text("watches only")
    admin.screenshot(path=str(OUTPUT / "users-1366x768.png"), full_page=True)

    erin.locator("summary").click()
    erin.get_by_role("button", name=re.compile("Delete erin")).click()
    admin.wait_for_url(re.compile(r"/admin/users"))
    expect(admin.locator("tr[data-username=erin]")).to_have_count(0)
