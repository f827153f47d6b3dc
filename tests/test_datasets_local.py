"""Local CSV and Parquet datasets: read with the metadata's dtypes, cached, reloaded on re-registration."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import start_server, stop_server
from lomas.client import Client, InternalServerError
from lomas.server.demo.catalog import DATASETS_DIR
from lomas.server.store.db import make_engine, session_factory, upgrade
from lomas.server.store.service import AdminStore

COUNT = "SELECT COUNT(*) AS n FROM df"


def _store(data_dir: Path) -> AdminStore:
    engine = make_engine(f"sqlite:///{data_dir / 'lomas.db'}")
    upgrade(engine)
    return AdminStore(session_factory(engine))


def _iris_metadata(rows: int) -> dict:
    metadata = yaml.safe_load((DATASETS_DIR / "iris_metadata.yaml").read_text())
    metadata["rows"] = rows
    return metadata


def test_parquet_and_csv_datasets_answer_and_reload_when_re_registered(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    iris = pd.read_csv(DATASETS_DIR / "iris.csv")
    big = pd.concat([iris] * 20, ignore_index=True)  # 3000 rows
    big.to_parquet(tmp_path / "iris.parquet")
    store = _store(data_dir)
    store.register_dataset("FLOWERS", {"kind": "local", "path": str(tmp_path / "iris.parquet")}, _iris_metadata(3000))
    store.add_user("Ada")
    store.grant("Ada", "FLOWERS", 100.0, 0.01)

    server = start_server(data_dir, env={"LOMAS_AUTH__OPEN_MODE": "true"})
    try:
        client = Client(server.url, "Ada", "FLOWERS")
        assert abs(client.smartnoise_sql.query(COUNT, 5.0, 1e-5).df["n"].iloc[0] - 3000) < 20
        by_species = client.smartnoise_sql.query(
            "SELECT species, COUNT(*) AS n FROM df GROUP BY species", 5.0, 1e-5
        ).df.set_index("species")["n"]
        assert all(abs(by_species - 1000) < 20)

        iris.to_csv(tmp_path / "iris.csv", index=False)  # 150 rows, now as CSV
        version = store.register_dataset(
            "FLOWERS", {"kind": "local", "path": str(tmp_path / "iris.csv")}, _iris_metadata(150), replace=True
        )
        assert version == 2
        assert abs(client.smartnoise_sql.query(COUNT, 5.0, 1e-5).df["n"].iloc[0] - 150) < 20

        (tmp_path / "iris.csv").rename(tmp_path / "moved.csv")
        store.register_dataset(
            "FLOWERS", {"kind": "local", "path": str(tmp_path / "iris.csv")}, _iris_metadata(150), replace=True
        )
        spent = client.get_total_spent_budget().total_spent_epsilon
        with pytest.raises(InternalServerError, match="no budget was spent"):
            client.smartnoise_sql.query(COUNT, 5.0, 1e-5)
        assert client.get_total_spent_budget().total_spent_epsilon == spent  # unreachable data: not charged
        assert "Data file not found" in server.log()
    finally:
        stop_server(server)
