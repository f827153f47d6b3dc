"""Seed the demo content into an empty admin store (an existing store is never touched)."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml
from sqlalchemy import Engine

from lomas.server.demo.catalog import demo_datasets, demo_grants
from lomas.server.store.db import exclusive, session_factory
from lomas.server.store.service import AdminStore

logger = logging.getLogger(__name__)


def seed_if_empty(engine: Engine, data_dir: Path) -> bool:
    """Add the demo datasets, users and grants when the store has neither users nor datasets."""
    with exclusive(engine):
        return _seed(AdminStore(session_factory(engine)), data_dir)


def _seed(store: AdminStore, data_dir: Path) -> bool:
    if store.list_users() or store.list_datasets():
        logger.info("demo: the store already has content; leaving it as it is")
        return False
    for dataset in demo_datasets():
        metadata = yaml.safe_load(dataset.metadata_path.read_text())
        access = {"kind": "local", "path": str(dataset.data_path), "format": dataset.file_format}
        store.register_dataset(dataset.name, access, metadata)
    for user_name, dataset_name, epsilon, delta in demo_grants():
        if not store.user_exists(user_name):
            store.add_user(user_name)
        store.grant(user_name, dataset_name, epsilon, delta)
    logger.info("demo: seeded %d datasets and %d users into %s", len(demo_datasets()), len(store.list_users()), data_dir)
    return True
