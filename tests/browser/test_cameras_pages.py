"""Several cameras in real headless Chromium, against a ``--demo`` daemon with three cameras
(see ``conftest.py``: ``default`` RoboCam, ``esp32`` light only, ``garden`` exclusive):
the grid, switching cameras, controls the camera does not have, exclusive control as two
users see it, and the admin's camera pages. Every test also fails on any console error."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import FLEET_CAMERAS, ONE_CAMERA_USER, OUTPUT, REPO, Pages
from tests.browser.test_viewer_page import OVERFLOWING, UNLABELLED_BUTTONS, expect_live

pytestmark = pytest.mark.browser

TILE = ".camera-tile[data-camera='{}']"
TILE_FRAMES_AT_LEAST = """
([name, n]) => Number(document.querySelector(`.camera-tile[data-camera="${name}"] canvas`)
  .dataset.frames) >= n
"""
TILE_NUMBER = """
([name, field]) => Number(document.querySelector(`.camera-tile[data-camera="${name}"] canvas`)
  .dataset[field])
"""
COUNTDOWN_BELOW = """
(limit) => {
  const found = /for (\\d+) s more/.exec(document.getElementById('control-countdown').textContent);
  return found !== null && Number(found[1]) < limit;
}
"""


def tile_number(page: Any, camera: str, field: str) -> int:
    return int(page.evaluate(TILE_NUMBER, [camera, field]))


def wait_tile_frames(page: Any, camera: str, more: int) -> None:
    target = tile_number(page, camera, "frames") + more
    page.wait_for_function(TILE_FRAMES_AT_LEAST, arg=[camera, target])


def screenshot(page: Any, name: str, *, full_page: bool = False) -> None:
    OUTPUT.mkdir(exist_ok=True)
    page.mouse.move(0, 0)
    page.screenshot(path=str(OUTPUT / name), full_page=full_page)


def test_the_grid_shows_every_camera_live_with_counts(fleet_pages: Pages) -> None:
    page = fleet_pages.login("alice")
    expect(page).to_have_title(re.compile("^Cameras"))
    tiles = page.locator(".camera-tile")
    expect(tiles).to_have_count(len(FLEET_CAMERAS))
    for name, title in FLEET_CAMERAS.items():
        tile = page.locator(TILE.format(name))
        expect(tile.locator(".tile-title")).to_have_text(title)
        expect(tile).to_have_attribute("data-state", "online")
        expect(tile.locator(".tile-status")).to_have_text("online")
        expect(tile.locator(".tile-count")).to_have_text("1")  # this very tile
        expect(tile.locator(".tile-link")).to_have_attribute("href", f"/cam/{name}/")
        wait_tile_frames(page, name, 2)
    expect(page.locator(TILE.format("esp32")).locator(".tile-kind")).to_have_text("esp32")
    expect(page.locator(TILE.format("default")).locator(".tile-kind")).to_have_text("robocam")
    screenshot(page, "grid-1366x768.png")

    # Another viewer's grid: every tile of the first page counts two, from the events.
    other = fleet_pages.login("bob")
    for name in FLEET_CAMERAS:
        expect(page.locator(TILE.format(name)).locator(".tile-count")).to_have_text("2")
        expect(other.locator(TILE.format(name)).locator(".tile-count")).to_have_text("2")
    other.context.close()
    for name in FLEET_CAMERAS:
        expect(page.locator(TILE.format(name)).locator(".tile-count")).to_have_text("1")

    page.locator(TILE.format("esp32")).locator(".tile-link").click()
    page.wait_for_url(f"{fleet_pages.stack.url}/cam/esp32/")
    expect(page.locator("#camera-title")).to_have_text(FLEET_CAMERAS["esp32"])
    expect_live(page)


def test_the_grid_on_a_phone_pauses_tiles_off_screen(fleet_pages: Pages) -> None:
    page = fleet_pages.login("bob", viewport={"width": 360, "height": 740})
    first, last = "default", "garden"
    expect(page.locator(TILE.format(last))).to_have_attribute("data-state", "online")
    wait_tile_frames(page, first, 2)
    layout = page.evaluate(OVERFLOWING)
    assert layout["scroll"] <= 360, layout
    assert layout["wide"] == [], layout
    assert page.evaluate(UNLABELLED_BUTTONS) == []
    screenshot(page, "grid-360x740.png")

    # The last tile is below the fold: it asked for no frames, and gets none.
    box = page.locator(TILE.format(last)).bounding_box()
    assert box is not None and box["y"] >= 740, box
    expect(page.locator(TILE.format(last))).to_have_attribute("data-fps", "0")
    received = tile_number(page, last, "received")
    wait_tile_frames(page, first, 3)  # about 1.5 s at the tiles' 2 fps
    assert tile_number(page, last, "received") <= received + 1  # at most one in flight

    page.locator(TILE.format(last)).scroll_into_view_if_needed()
    expect(page.locator(TILE.format(last))).to_have_attribute("data-fps", "2")
    wait_tile_frames(page, last, 2)
    page.evaluate("() => window.scrollTo(0, 0)")
    expect(page.locator(TILE.format(last))).to_have_attribute("data-fps", "0")
    screenshot(page, "grid-360x740-full.png", full_page=True)


def test_switching_cameras_from_the_viewer_page(fleet_pages: Pages) -> None:
    page = fleet_pages.login("alice")
    page.goto("/cam/default/")
    expect(page).to_have_title(re.compile(f"^{FLEET_CAMERAS['default']}"))
    expect(page.locator("#camera-title")).to_have_text(FLEET_CAMERAS["default"])
    expect_live(page)
    expect(page.locator("#pos-x")).to_have_text(re.compile(r"^\d+$"))
    screenshot(page, "viewer-default-1366x768.png")
    if os.environ.get("CAMPROXY_UPDATE_SCREENSHOT") == "1":
        page.screenshot(path=str(REPO / "docs" / "screenshot.png"))
    switcher = page.locator("#camera-switcher")
    links = switcher.locator(".switcher-link")
    expect(links.first).to_be_hidden()
    switcher.locator("summary").click()
    expect(links).to_have_count(len(FLEET_CAMERAS) - 1)
    expect(links.filter(has_text=FLEET_CAMERAS["default"])).to_have_count(0)
    page.keyboard.press("Escape")
    expect(links.first).to_be_hidden()

    switcher.locator("summary").click()
    links.filter(has_text=FLEET_CAMERAS["garden"]).click()
    page.wait_for_url(f"{fleet_pages.stack.url}/cam/garden/")
    expect(page).to_have_title(re.compile(f"^{FLEET_CAMERAS['garden']}"))
    expect(page.locator("#camera-title")).to_have_text(FLEET_CAMERAS["garden"])
    expect_live(page)
    expect(page.locator("#btn-up")).to_be_visible()

    page.locator("#camera-switcher summary").click()
    page.locator("#all-cameras-link").click()
    page.wait_for_url(f"{fleet_pages.stack.url}/")
    expect(page.locator(".camera-tile")).to_have_count(len(FLEET_CAMERAS))

    # A user who may view one camera only: "/" is its viewer page, with no switcher.
    single = fleet_pages.login(ONE_CAMERA_USER)
    expect(single.locator("#camera-title")).to_have_text(FLEET_CAMERAS["default"])
    expect(single.locator("#camera-switcher")).to_have_count(0)
    expect_live(single)


def test_a_light_only_camera_shows_no_pan_tilt(fleet_pages: Pages) -> None:
    page = fleet_pages.login("bob")
    page.goto("/cam/esp32/")
    expect_live(page)
    for selector in ["#pan-tilt", "#btn-up", "#btn-center", "#pan-slider", "#tilt-slider"]:
        expect(page.locator(selector)).to_be_hidden()
    expect(page.locator("#key-hint-move")).to_be_hidden()
    expect(page.locator("#capability-note")).to_have_text(
        "This camera has a light; it cannot pan or tilt."
    )
    light = page.locator("#light-toggle")
    expect(light).to_be_visible()
    expect(light).to_be_enabled()
    expect(page.locator("#control-reason")).to_be_hidden()
    page.keyboard.press("ArrowUp")  # no pan/tilt: the key does nothing at all
    light.click()
    expect(light).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("l")
    expect(light).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#toasts .toast")).to_have_count(0)
    screenshot(page, "viewer-esp32-1366x768.png")


def test_exclusive_control_as_two_users_see_it(fleet_pages: Pages) -> None:
    alice = fleet_pages.login("alice")
    alice.goto("/cam/garden/")
    bob = fleet_pages.login("bob")
    bob.goto("/cam/garden/")
    for page in (alice, bob):
        expect_live(page)
        expect(page.locator("#btn-up")).to_be_enabled()
        expect(page.locator("#control-hold")).to_contain_text("Exclusive control")
        expect(page.locator("#release-control")).to_be_hidden()

    alice.click("#btn-center")
    expect(alice.locator("#control-hold")).to_contain_text("You control the camera for")
    expect(alice.locator("#release-control")).to_be_visible()
    expect(alice.locator("#btn-up")).to_be_enabled()

    reason = bob.locator("#control-reason")
    expect(reason).to_be_visible()
    expect(reason).to_contain_text("alice controls the camera for")
    expect(bob.locator("#control-countdown")).to_have_text(re.compile(r"^ for \d+ s more\.$"))
    for selector in ["#btn-up", "#btn-center", "#pan-slider", "#tilt-slider", "#light-toggle"]:
        expect(bob.locator(selector)).to_be_disabled()
    expect(bob.locator("#release-control")).to_be_hidden()
    # The countdown runs (from the server's expires_in), without any new message.
    seconds = int(re.findall(r"\d+", bob.locator("#control-countdown").text_content() or "")[0])
    assert 20 <= seconds <= 30, seconds
    bob.wait_for_function(COUNTDOWN_BELOW, arg=seconds)
    bob.keyboard.press("ArrowUp")
    expect(bob.locator("#toasts .toast")).to_contain_text("alice controls the camera")
    screenshot(bob, "viewer-held-1366x768.png")

    alice.click("#release-control")
    expect(alice.locator("#release-control")).to_be_hidden()
    expect(bob.locator("#btn-up")).to_be_enabled()
    expect(reason).to_be_hidden()
    expect(bob.locator("#control-hold")).to_contain_text("Exclusive control")
    # Now bob takes it, and alice (an admin) is told that her command would take it over.
    bob.click("#btn-down")
    expect(alice.locator("#control-hold")).to_contain_text("bob controls the camera for")
    expect(alice.locator("#control-hold")).to_contain_text("takes control over")
    expect(alice.locator("#btn-up")).to_be_enabled()
    bob.click("#release-control")
    expect(alice.locator("#control-hold")).to_contain_text("Exclusive control")


@pytest.mark.parametrize(("width", "height"), [(1366, 768), (360, 740)])
def test_the_admin_cameras_page(fleet_pages: Pages, width: int, height: int) -> None:
    admin = fleet_pages.login("alice", viewport={"width": width, "height": height})
    admin.click("#admin-cameras-link")
    admin.wait_for_url(re.compile(r"/admin/cameras$"))
    rows = admin.locator("#cameras-table tbody tr")
    expect(rows).to_have_count(len(FLEET_CAMERAS))
    for name, title in FLEET_CAMERAS.items():
        row = admin.locator(f"tr[data-camera='{name}']")
        expect(row.locator(".camera-name")).to_have_text(title)
    expect(admin.locator("tr[data-camera='esp32'] .camera-url")).to_have_text(
        "http://democam-esp32"
    )
    layout = admin.evaluate(OVERFLOWING)
    assert layout["scroll"] <= width, layout
    assert layout["wide"] == [], layout
    assert admin.evaluate(UNLABELLED_BUTTONS) == []
    screenshot(admin, f"admin-cameras-{width}x{height}.png")
    screenshot(admin, f"admin-cameras-{width}x{height}-full.png", full_page=True)
    if width < 600:
        return

    # Test connection answers in place; the form keeps what was typed.
    name = "porch"
    url = fleet_pages.stack.camera_url
    admin.fill("#new-name", name)
    admin.fill("#new-url", url)
    admin.fill("#new-title", "The porch")
    admin.click("#add-camera-test")
    result = admin.locator("#probe-result")
    expect(result).to_have_text(re.compile(r"^robocam, 640x480"), timeout=30_000)
    expect(result).to_have_class(re.compile("alert-ok"))
    expect(admin.locator("#new-url")).to_have_value(url)
    admin.click("#add-camera-submit")
    admin.wait_for_url(re.compile(r"/admin/cameras\?done=added"))
    expect(admin.locator("#admin-message")).to_contain_text("porch")
    expect(admin.locator("tr[data-camera='porch'] .camera-name")).to_have_text("The porch")

    # The browser itself refuses a name no camera may have (the field's pattern) ...
    admin.fill("#new-name", "Not A Name")
    admin.fill("#new-url", url)
    admin.click("#add-camera-submit")
    assert admin.evaluate("() => document.getElementById('new-name').validity.patternMismatch")
    # ... and the server a duplicate: one line on the page (a 400, on purpose).
    fleet_pages.expect_console_error(r"status of 400")
    admin.fill("#new-name", "porch")
    admin.click("#add-camera-submit")
    expect(admin.locator("#admin-error")).to_have_text("A camera named 'porch' exists already")
    expect(admin.locator("#new-name")).to_have_value("porch")

    # Its page: grants, then remove it.
    admin.goto("/admin/cameras/porch")
    expect(admin.locator("#camera-title")).to_have_text("The porch")
    bob = admin.locator("tr[data-username='bob']")
    bob.get_by_label("bob: none").check()
    admin.click("#grants-save")
    admin.wait_for_url(re.compile(r"/admin/cameras/porch\?done=grants"))
    expect(admin.locator("#admin-message")).to_contain_text("Access to porch saved")
    expect(admin.locator("tr[data-username='bob'] .badge-level")).to_have_text("none")
    screenshot(admin, "admin-camera-1366x768-full.png", full_page=True)
    admin.locator("#camera-remove").locator("xpath=..").locator("summary").click()
    admin.check("#remove-confirm")
    admin.click("#remove-submit")
    admin.wait_for_url(re.compile(r"/admin/cameras\?done=removed"))
    expect(admin.locator("tr[data-camera='porch']")).to_have_count(0)
