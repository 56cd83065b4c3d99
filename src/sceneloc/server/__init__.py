"""``sceneloc serve``: the HTTP API and the web page, over one loaded model."""

from sceneloc.server.app import create_app

__all__ = ["create_app"]
