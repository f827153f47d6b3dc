"""Generate the fictional `patients.csv` demo dataset (seeded: every run writes the same file).

Run `python -m lomas.server.demo.make_patients` to regenerate it next to its metadata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lomas.core.metadata import Metadata
from lomas.server.data.dtypes import coerce_frame

DATASETS_DIR = Path(__file__).parent / "datasets"
SEED = 20240501
NB_ROWS = 500
DEPARTMENTS = np.array(["cardiology", "emergency", "neurology", "oncology", "orthopedics"])
# A few ICD-10-like codes per department (same order), so the free-text column repeats realistically.
DIAGNOSES = np.array(
    [
        ["I10", "I21.4", "I48.0", "I50.9"],
        ["R07.4", "S06.0", "T78.2", "R55"],
        ["G40.9", "G43.1", "I63.9", "G35"],
        ["C34.9", "C50.9", "C18.7", "C61"],
        ["S72.0", "M17.1", "S82.6", "M16.1"],
    ]
)


def make_patients(rng: np.random.Generator, nb_rows: int) -> pd.DataFrame:
    """Plausible, loosely correlated admissions: stays grow with severity, blood pressure with age."""
    department = rng.integers(len(DEPARTMENTS), size=nb_rows)
    severity = rng.choice([1, 2, 3, 4, 5], size=nb_rows, p=[0.3, 0.3, 0.2, 0.15, 0.05])
    age = np.clip(rng.normal(58, 18, nb_rows), 18, 98).astype(int)
    days = rng.integers(0, 3 * 365, size=nb_rows)  # 2021 to 2023
    bmi = np.round(np.clip(rng.normal(26.5, 4.5, nb_rows), 15, 50), 1)
    systolic = np.round(np.clip(rng.normal(105 + 0.5 * age, 15), 80, 220))
    return pd.DataFrame(
        {
            "admission_date": pd.Timestamp("2021-01-01") + pd.to_timedelta(np.sort(days), unit="D"),
            "age": age,
            "sex": rng.choice(["female", "male"], size=nb_rows),
            "department": DEPARTMENTS[department],
            "severity": severity,
            "diagnosis_code": DIAGNOSES[department, rng.integers(DIAGNOSES.shape[1], size=nb_rows)],
            "smoker": rng.random(nb_rows) < 0.22,
            "bmi": np.where(rng.random(nb_rows) < 0.08, np.nan, bmi),
            "temperature_c": np.round(np.clip(rng.normal(37.0 + 0.2 * severity, 0.5), 35.0, 41.5), 1),
            "systolic_bp": np.where(rng.random(nb_rows) < 0.05, np.nan, systolic),
            "length_of_stay_days": np.clip(rng.poisson(1.5 * severity**1.4), 0, 120),
        }
    )


def main() -> None:
    metadata = Metadata.model_validate(yaml.safe_load((DATASETS_DIR / "patients_metadata.yaml").read_text()))
    frame = coerce_frame(make_patients(np.random.default_rng(SEED), NB_ROWS), metadata)
    frame.to_csv(DATASETS_DIR / "patients.csv", index=False)


if __name__ == "__main__":
    main()
