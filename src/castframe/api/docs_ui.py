"""``GET /docs``: Swagger UI served from this server, so the API docs work without internet.

FastAPI's own page loads Swagger UI from a CDN and is blank offline. The ``fastapi-offline``
package (a runtime dependency; MIT) carries Swagger UI 5's files, the first major version that
reads OpenAPI 3.1, which FastAPI writes. Only its files are used, served under
``/docs/assets``; the page is FastAPI's own HTML pointed at them.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"
SWAGGER_FILES = files("fastapi_offline") / "static"


def install_docs(app: FastAPI, title: str) -> None:
    """Add ``/docs`` and its assets to an app built with ``docs_url=None``."""
    app.mount(ASSETS, StaticFiles(directory=str(SWAGGER_FILES)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            # Swagger UI would ask validator.swagger.io for a badge: nothing leaves this server.
            swagger_ui_parameters={"validatorUrl": None},
        )
