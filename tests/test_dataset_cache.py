"""The dataset cache: one load per cold dataset, least recently used dropped past its memory limit."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import yaml

from lomas.core.metadata import Metadata
from lomas.server.data.base import DataSource
from lomas.server.data.cache import DatasetCache
from lomas.server.data.loading import read_table
from lomas.server.data.memory import MemorySource
from lomas.server.demo.catalog import DATASETS_DIR
from lomas.server.store.service import DatasetRecord

METADATA = Metadata.model_validate(
    yaml.safe_load((DATASETS_DIR / "iris_metadata.yaml").read_text()) | {"rows": 10_000}
)


class CountingLoader:
    """Loads real iris files (one per dataset name) and counts the loads."""

    def __init__(self, folder: Path, delay: float = 0.0) -> None:
        self.folder = folder
        self.delay = delay
        self.loads: list[str] = []
        iris = pd.read_csv(DATASETS_DIR / "iris.csv")
        for name, copies in (("SMALL", 10), ("LARGE", 30), ("OTHER", 10)):
            pd.concat([iris] * copies).to_parquet(folder / f"{name}.parquet")

    def __call__(self, dataset: DatasetRecord) -> DataSource:
        self.loads.append(dataset.name)
        time.sleep(self.delay)
        table = read_table(self.folder / f"{dataset.name}.parquet", "parquet", METADATA)
        return MemorySource(table, METADATA)


def _record(name: str, version: int = 1) -> DatasetRecord:
    return DatasetRecord(name=name, access={}, metadata=METADATA, version=version)


def test_concurrent_requests_for_a_cold_dataset_load_it_once(tmp_path: Path) -> None:
    loader = CountingLoader(tmp_path, delay=0.3)
    cache = DatasetCache(loader)
    sources: list[DataSource] = []
    threads = [threading.Thread(target=lambda: sources.append(cache.get(_record("SMALL")))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loader.loads == ["SMALL"]
    assert len({id(source) for source in sources}) == 1


def test_least_recently_used_datasets_are_dropped_past_the_memory_limit(tmp_path: Path) -> None:
    loader = CountingLoader(tmp_path)
    small, large = (
        MemorySource(read_table(tmp_path / f"{name}.parquet", "parquet", METADATA), METADATA).nbytes
        for name in ("SMALL", "LARGE")
    )
    assert large > 2.5 * small
    cache = DatasetCache(loader, max_bytes=int(small * 2.5))
    cache.get(_record("SMALL"))
    cache.get(_record("OTHER"))
    cache.get(_record("SMALL"))  # SMALL is now the most recently used
    assert loader.loads == ["SMALL", "OTHER"] and cache.nbytes == 2 * small

    cache.get(_record("LARGE"))  # alone above the limit: kept while it is the one in use
    assert cache.nbytes == large
    cache.get(_record("SMALL"))
    assert loader.loads == ["SMALL", "OTHER", "LARGE", "SMALL"]
    cache.get(_record("OTHER"))
    assert loader.loads[-1] == "OTHER" and cache.nbytes == 2 * small


def test_forms_made_from_a_dataset_count_towards_the_limit(tmp_path: Path) -> None:
    loader = CountingLoader(tmp_path)
    cache = DatasetCache(loader, max_bytes=10 * 2**20)
    source = cache.get(_record("SMALL"))
    table_only = cache.nbytes
    source.frame()  # the pandas form: object strings, larger than the Arrow table
    source.lazy()
    assert cache.nbytes > 2 * table_only
    assert source.nbytes == cache.nbytes


def test_a_new_version_replaces_the_old_one(tmp_path: Path) -> None:
    loader = CountingLoader(tmp_path)
    cache = DatasetCache(loader)
    first = cache.get(_record("SMALL", 1))
    second = cache.get(_record("SMALL", 2))
    assert first is not second and loader.loads == ["SMALL", "SMALL"]
    assert cache.nbytes == second.nbytes
