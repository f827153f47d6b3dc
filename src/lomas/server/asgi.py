"""The ASGI entry point: `uvicorn --factory lomas.server.asgi:app_factory` (settings from LOMAS_*)."""

from fastapi import FastAPI

from lomas.server.app import create_app
from lomas.server.config import load_settings


def app_factory() -> FastAPI:
    return create_app(load_settings())
