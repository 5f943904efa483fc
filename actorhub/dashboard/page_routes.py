"""The dashboard's web page: `/` and its files under `/static/` (`dashboard/static/`: plain
HTML, JavaScript and CSS, no build step).

These are the only routes served without the token (`is_page_request`): the files hold no
cluster data, and the page asks for the token itself, then sends it with each call to the
JSON routes (`state_routes.py`, `job_routes.py`).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).with_name("static")
STATIC_PREFIX = "/static/"
# The files change with the package: a browser asks again rather than run an old app.js.
_NO_CACHE = {"Cache-Control": "no-cache"}

routes = web.RouteTableDef()


def is_page_request(request: web.Request) -> bool:
    return request.method in ("GET", "HEAD") and (request.path == "/" or request.path.startswith(STATIC_PREFIX))


@routes.get("/")
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=_NO_CACHE)


@routes.get(STATIC_PREFIX + "{name}")
async def static_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    path = STATIC_DIR / name
    # Only the files of the folder itself: no subfolders, no way out of it.
    if "/" in name or name.startswith(".") or not path.is_file():
        raise web.HTTPNotFound(text=f"no file {name} in the dashboard's static files")
    return web.FileResponse(path, headers=_NO_CACHE)
