"""The web page's files as the service serves them (the page itself is tested in a browser
by tests/e2e)."""

from __future__ import annotations

import re

from service.settings import Settings
from tests.conftest import LiveServer


def test_page_is_served_from_the_package_with_a_strict_policy(tmp_path):
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'page.sqlite3'}",
        cpu_workers=1,
        environment="test",
        api_key="k",
    )
    with LiveServer(settings) as server, server.client() as client:
        index = client.get("/")
        assert index.status_code == 200 and "text/html" in index.headers["content-type"]
        assert "default-src 'self'" in index.headers["content-security-policy"]
        # Every module the page imports, followed from app.js, is served as JavaScript.
        seen, todo = set(), ["app.js"]
        while todo:
            module = todo.pop()
            seen.add(module)
            r = client.get(f"/ui/{module}")
            assert r.status_code == 200 and "javascript" in r.headers["content-type"], module
            assert r.headers["cache-control"] == "no-cache"  # revalidated after an upgrade
            again = client.get(f"/ui/{module}", headers={"If-None-Match": r.headers["etag"]})
            assert again.status_code == 304
            todo += set(re.findall(r'from "\./([a-z]+\.js)"', r.text)) - seen
        assert {"api.js", "ui.js", "catalogue.js", "identify.js", "streams.js"} <= seen
        assert client.get("/ui/style.css").status_code == 200
        # The page is not part of the API's contract, and unknown paths stay JSON errors.
        assert "/" not in client.get("/openapi.json").json()["paths"]
        missing = client.get("/ui/nothing.js")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert client.get("/nothing").json()["error"]["code"] == "not_found"
        # The page itself needs no key (it asks for one); the API behind it does.
        assert client.get("/songs").status_code == 401
