"""`lomas-server`: start the Lomas server."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
import yaml
import uvicorn

from lomas.server.config import load_settings

cli = typer.Typer(add_completion=False, help="Start the Lomas server.")


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8000].")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the embedded store lives [default: ./lomas-data].")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML settings file (LOMAS_* variables override it).")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Seed demo datasets and users into an empty store; open mode.")] = False,
    workers: Annotated[int | None, typer.Option(help="Server processes [default: 1].")] = None,
) -> None:
    """Serve the Lomas API. With --demo, an empty store is seeded and the 0.4 user-name header is trusted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request's full URL at INFO; a data URL may carry a signature or a token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    overrides = {"host": host, "port": port, "data_dir": data_dir, "workers": workers, "demo": demo or None}
    for key, value in overrides.items():  # worker processes read their settings from the environment
        if value is not None:
            os.environ[f"LOMAS_{key.upper()}"] = str(value)
    if demo:
        os.environ.setdefault("LOMAS_AUTH__OPEN_MODE", "true")
    try:
        settings = load_settings(config)
    except (FileNotFoundError, ValueError, yaml.YAMLError) as error:
        typer.echo(f"Cannot start: {error}", err=True)
        raise typer.Exit(code=2) from error
    from lomas.server.demo.seed import seed_if_empty
    from lomas.server.store.db import make_engine, upgrade

    engine = make_engine(settings.store_url)
    upgrade(engine)
    if settings.demo:
        seed_if_empty(engine, settings.data_dir)
    engine.dispose()
    uvicorn.run(
        "lomas.server.asgi:app_factory",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level="info",
    )


def main() -> None:
    cli()
