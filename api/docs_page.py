"""``GET /docs``: the API reference, Swagger UI over ``/openapi.json``.

Swagger UI's files come from the ``swagger-ui-py`` package (Swagger UI 5, which reads
OpenAPI 3.1) and are served from here: a page that loaded them from a CDN would be blank
wherever the internet is not reachable, as on the hosts this gateway is made for.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(swagger_ui.__file__).resolve().parent / "static"

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Media Gateway API</title>
  <link rel="icon" href="/docs/static/favicon-32x32.png">
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script src="/docs/static/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""

# a script file rather than inline: the page can then forbid inline scripts
_INIT = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "StandaloneLayout",
  validatorUrl: null,
  oauth2RedirectUrl: window.location.origin + "/docs/static/oauth2-redirect.html",
});
window.ui.initOAuth({clientId: "mgw-app", usePkceWithAuthorizationCodeGrant: true});
"""

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)


async def docs(request: Request) -> Response:
    """The API reference (Swagger UI), served from this process."""
    return HTMLResponse(
        _PAGE, headers={"Content-Security-Policy": _CSP, "Cache-Control": "public, max-age=300"}
    )


async def docs_init(request: Request) -> Response:
    """Swagger UI's start-up script for /docs."""
    return Response(
        _INIT, media_type="text/javascript", headers={"Cache-Control": "public, max-age=300"}
    )


routes = [
    Route("/docs", docs, methods=["GET"], include_in_schema=False),
    Route("/docs/init.js", docs_init, methods=["GET"], include_in_schema=False),
    Mount("/docs/static", StaticFiles(directory=STATIC), name="docs-static"),
]
