"""The HTTP site: pages, login, admin, the REST API, CSRF, origins, trusted proxies and the
request log."""
