"""The pages: the web UI at ``/`` (with its ``/static`` files) and the API docs, Swagger UI at ``/docs`` and ReDoc at
``/redoc``, served from local files.

FastAPI's own docs pages load their JavaScript from a CDN, which a machine
without network (or a browser that should not call out) cannot use; the
fastapi-offline package ships the same files. The local ReDoc is served with
its logo's CDN address replaced, Swagger UI without its online validator
badge, and both pages with a Content-Security-Policy that allows this server
only. Without fastapi-offline installed, /docs is a plain page listing the
endpoints of /openapi.json (and /redoc is not offered).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"  # ferkit/app/static: the UI's files

# ReDoc's sidebar footer shows a logo fetched from this address: the one request it would make off the machine.
_REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
_BLANK_GIF = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
# The docs pages may load only what this server serves (ReDoc runs a worker from a blob: URL, shows data: images).
_DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' blob:; worker-src 'self' blob:; "
             "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'")


def _docs_assets() -> Path | None:
    """fastapi-offline's folder of Swagger UI and ReDoc files, or None when it is not installed."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    assets = Path(fastapi_offline.__file__).resolve().parent / "static"
    return assets if (assets / "swagger-ui-bundle.js").is_file() else None


router = APIRouter(include_in_schema=False)
_assets = _docs_assets()

if _assets is not None:
    _redoc_js: list[bytes] = []  # read on first use

    @router.get("/redoc-assets/redoc.standalone.js")
    async def redoc_script() -> Response:
        if not _redoc_js:
            text = (_assets / "redoc.standalone.js").read_text(encoding="utf-8")
            _redoc_js.append(text.replace(_REDOC_LOGO, _BLANK_GIF).encode("utf-8"))
        return Response(_redoc_js[0], media_type="text/javascript", headers={"Cache-Control": "max-age=3600"})

    router.mount("/docs-assets", StaticFiles(directory=_assets), name="docs-assets")

    @router.get("/docs")
    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(openapi_url=f"{root}{request.app.openapi_url}", title="ferkit API",
                                   swagger_js_url=f"{root}/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}/docs-assets/swagger-ui.css",
                                   swagger_favicon_url=f"{root}/docs-assets/favicon.png",
                                   swagger_ui_parameters={"validatorUrl": None})  # its badge is an image from swagger.io
        page.headers["Content-Security-Policy"] = _DOCS_CSP
        return page

    @router.get("/redoc")
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(openapi_url=f"{root}{request.app.openapi_url}", title="ferkit API",
                              redoc_js_url=f"{root}/redoc-assets/redoc.standalone.js",
                              redoc_favicon_url=f"{root}/docs-assets/favicon.png", with_google_fonts=False)
        page.headers["Content-Security-Policy"] = _DOCS_CSP
        return page

else:

    @router.get("/docs")
    async def plain_docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html")


router.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})
