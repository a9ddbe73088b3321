"""``fastnst serve``: stylizing over HTTP, an API and a web page, for many clients at once.

* ``config.ServeConfig`` — every option, validated once;
* ``app`` — the ASGI app (``create_app``): endpoints, limits, errors, the page;
* ``engine`` — the bounded queue to the models, batching, worker threads, metrics;
* ``page.html`` — the web page: one static file, plain JavaScript, nothing from elsewhere.

Why FastAPI, Starlette and uvicorn: the model runs on threads, so the server
must be asynchronous to hold many slow uploads and waiting clients without a
thread each; Starlette is a small, well-kept ASGI toolkit (streaming bodies,
multipart, CORS, a test client), FastAPI adds validated parameters and the
OpenAPI page from type hints, and uvicorn is the standard ASGI server. All
three are optional (``pip install fastnst[serve]``): ``ServeConfig`` imports
none of them, ``create_app`` says what is missing.
"""

from __future__ import annotations

import importlib.util

from fastnst.errors import ConfigError
from fastnst.serve.config import ServeConfig

# Module name → the package that provides it.
STACK = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}


def require_stack() -> None:
    """A one-line ``ConfigError`` when FastAPI, uvicorn or python-multipart is not installed."""
    missing = [package for module, package in STACK.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(f"fastnst serve needs {', '.join(missing)}: pip install 'fastnst[serve]'")


def create_app(config: ServeConfig, engine=None):
    """The ASGI app for ``config`` (see ``fastnst.serve.app.create_app``)."""
    require_stack()
    from fastnst.serve.app import create_app as build

    return build(config, engine)


__all__ = ["ServeConfig", "create_app", "require_stack"]
