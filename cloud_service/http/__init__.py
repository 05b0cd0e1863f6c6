"""The HTTP bridge (FastAPI over TLS): what clients use, plus presigned object transfers.

Thin by design: each route authenticates, calls JobOperations, and turns Refusal into a JSON
error ``{"error": {"code", "message", "attribute"?, "supported"?}}`` with the right status.

One ``APIRouter`` per resource, each importable and testable on its own (mount it on a bare
FastAPI app with ``app.state.deps`` set and ``add_error_handlers``):

- ``app``: ``create_app(deps)``, the middleware, the error handlers, and the routers below;
- ``deps``: ``Deps`` (what the routes need) and the ``current_user`` dependency;
- ``responses``: the JSON response class and the error envelope;
- ``operators``: health and metrics; ``services``: the Service objects; ``jobs``: jobs and their
  documents; ``events``: a job's server-sent events; ``objects``: presigned PUT and GET;
  ``manage``: users, tokens, devices, sharing, policies, quotas and accounting.
"""

from cloud_service.http.app import create_app
from cloud_service.http.deps import Deps

__all__ = ["Deps", "create_app"]
