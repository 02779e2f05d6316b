"""An HTTP client for tests that keeps cookies like a browser and never follows redirects."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from typing import Any

import attrs
import treq

CSRF_FIELD = re.compile(r'name="csrf_token"\s+value="([^"]+)"')


@attrs.define
class Page:
    code: int
    headers: Any
    text: str

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def all_headers(self, name: str) -> list[str]:
        return list(self.headers.getRawHeaders(name) or [])

    @property
    def csrf_token(self) -> str:
        found = CSRF_FIELD.search(self.text)
        assert found, "no csrf_token field on the page"
        return found.group(1)


@attrs.define
class Browser:
    base: str
    cookies: dict[str, str] = attrs.field(factory=dict)
    client: Any = treq

    async def get(self, path: str, **kwargs: Any) -> Page:
        return await self._page("GET", path, **kwargs)

    async def post(self, path: str, data: dict[str, str] | None = None, **kwargs: Any) -> Page:
        return await self._page("POST", path, data=data or {}, **kwargs)

    async def _page(self, method: str, path: str, **kwargs: Any) -> Page:
        headers = dict(kwargs.pop("headers", {}))
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = await self.client.request(
            method, self.base + path, headers=headers, allow_redirects=False, **kwargs
        )
        text = await response.text()
        for line in response.headers.getRawHeaders("Set-Cookie") or []:
            for name, morsel in SimpleCookie(line).items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return Page(response.code, response.headers, text)

    def cookie(self, name: str) -> str | None:
        return self.cookies.get(name)

    async def login(self, username: str, password: str, next_path: str = "") -> Page:
        form = await self.get("/login")
        data = {"username": username, "password": password, "csrf_token": form.csrf_token}
        if next_path:
            data["next"] = next_path
        return await self.post("/login", data)
