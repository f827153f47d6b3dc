"""DataFrames on the wire: pandas' `to_dict(orient="tight")` form, JSON-safe."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd


def frame_to_tight(frame: pd.DataFrame) -> dict[str, Any]:
    """The tight dict of a frame with JSON values only: NaN/NA become null, datetimes ISO strings."""
    split = json.loads(frame.to_json(orient="split", date_format="iso", date_unit="s", double_precision=15, default_handler=str))
    return {
        "index": split["index"],
        "columns": split["columns"],
        "data": split["data"],
        "index_names": [None] * frame.index.nlevels,
        "column_names": [None] * frame.columns.nlevels,
    }


def frame_from_tight(tight: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame.from_dict(tight, orient="tight")
