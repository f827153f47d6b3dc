"""What the demo seeds: datasets (data + metadata files) and the grants that imply its users."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

DATASETS_DIR = Path(__file__).parent / "datasets"


@dataclass(frozen=True)
class DemoDataset:
    """A demo dataset: a local data file and its Lomas metadata YAML."""

    name: str
    data_path: Path
    metadata_path: Path
    file_format: str


def demo_datasets() -> list[DemoDataset]:
    """PENGUIN is read from the installed palmerpenguins package; IRIS and PATIENTS ship with Lomas."""
    penguins_csv = Path(str(files("palmerpenguins").joinpath("data", "penguins.csv")))
    return [
        DemoDataset("PENGUIN", penguins_csv, DATASETS_DIR / "penguin_metadata.yaml", "csv"),
        DemoDataset("IRIS", DATASETS_DIR / "iris.csv", DATASETS_DIR / "iris_metadata.yaml", "csv"),
        DemoDataset(
            "PATIENTS", DATASETS_DIR / "patients.csv", DATASETS_DIR / "patients_metadata.yaml", "csv"
        ),
    ]


def demo_grants() -> list[tuple[str, str, float, float]]:
    """(user_name, dataset_name, initial_epsilon, initial_delta) for every demo user's budget."""
    return [
        ("Dr. Antartica", "PENGUIN", 10.0, 0.005),
        ("Tintin", "PENGUIN", 10.0, 0.005),
        ("Tintin", "IRIS", 10.0, 0.005),
        ("Milou", "IRIS", 1.0, 0.001),
        ("Dr. House", "PATIENTS", 5.0, 0.001),
        ("BirthdayGirl", "PATIENTS", 10.0, 0.005),
    ]
