"""What the client hands back to researchers: DataFrames and typed objects."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lomas.core.frames import frame_from_tight
from lomas.core.responses import DummyDatasetResponse, QueryResponse, SmartnoiseSQLResult


@dataclass(frozen=True)
class Answer:
    """What every answer carries: what it cost and who asked."""

    epsilon: float
    delta: float
    requested_by: str


@dataclass(frozen=True)
class QueryResult(Answer):
    """A differentially private table (SmartNoise-SQL, or synthetic samples)."""

    df: pd.DataFrame


def query_result(response: QueryResponse) -> QueryResult:
    assert isinstance(response.result, SmartnoiseSQLResult)
    return QueryResult(response.epsilon, response.delta, response.requested_by, frame_from_tight(response.result.df))


def dummy_frame(response: DummyDatasetResponse) -> pd.DataFrame:
    """Rebuild the dummy frame with the server's dtypes (datetimes travel as ISO strings)."""
    frame = frame_from_tight(response.dummy_df)
    for column in response.datetime_columns:
        frame[column] = pd.to_datetime(frame[column])
    return frame.astype({name: dtype for name, dtype in response.dtypes.items() if name not in response.datetime_columns})
