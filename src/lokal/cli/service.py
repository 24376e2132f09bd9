"""`lokal service start|stop|restart|status|ps`: the background server, shared with the `foundry` CLI."""

from lokal.foundry.cli import service_app as app

__all__ = ["app"]
