"""Anonymous liveness probe for load balancers, deployment checks and the local devstack."""

import json

import azure.functions as func

bp = func.Blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Answers 200 while the worker can run Python code; touches no dependency."""
    return func.HttpResponse(json.dumps({"status": "ok"}), status_code=200, mimetype="application/json")
