"""A Werkzeug app with the routes of a real checkout feature, for
tests/paths.rs: it routes the way Flask does (the dev server decodes %2F in
PATH_INFO, the router does not resolve `..`) and answers with the route it
matched and the path it read. Prints `PORT <n>` once it listens."""

import json
import sys

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

ROUTES = Map(
    [
        Rule("/api/v2/checkout", endpoint="checkout"),
        Rule("/api/v2/checkout/<path:rest>", endpoint="checkout-rest"),
        Rule("/", endpoint="other"),
        Rule("/<path:rest>", endpoint="other"),
    ]
)


@Request.application
def app(request):
    try:
        endpoint, _ = ROUTES.bind_to_environ(request.environ).match(method=request.method)
    except HTTPException as e:
        return e
    body = {"route": endpoint, "path": request.environ["PATH_INFO"], "raw": request.environ.get("RAW_URI")}
    return Response(json.dumps(body), content_type="application/json")


if __name__ == "__main__":
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(f"PORT {server.port}", flush=True)
    server.serve_forever()
