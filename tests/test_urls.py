"""Passwords in camera URLs: one splitter for hiding and restoring them."""

from __future__ import annotations

import pytest

from camproxy.urls import redacted_url, split_userinfo


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://bob:s3cret@cam/x", "http://bob:***@cam/x"),
        ("https://bob:p@ss:w@rd@cam:8443/", "https://bob:***@cam:8443/"),
        ("http://cam/x?password=1", "http://cam/x?password=1"),
        ("http://bob@cam/", "http://bob@cam/"),
        ("ws://u:pw@cam:81/ws", "ws://u:***@cam:81/ws"),
        ("http://u:p@cam?next=a@b", "http://u:***@cam?next=a@b"),
        ("http://u:p@cam#a@b", "http://u:***@cam#a@b"),
        ("http://cam?next=a:b@c", "http://cam?next=a:b@c"),
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("not a url", "not a url"),
    ],
)
def test_redacted_url_hides_only_the_user_infos_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_split_userinfo_gives_the_password_as_written() -> None:
    assert split_userinfo("http://admin:s%40cret@cam.lan/") == (
        "http://admin:",
        "s%40cret",
        "@cam.lan/",
    )
    assert split_userinfo("http://cam.lan/") is None
