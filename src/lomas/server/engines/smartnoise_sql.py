"""SmartNoise-SQL engine.

Planning parses and rewrites the query with SmartNoise-SQL against the public metadata only; the
rewrite (about 30 ms of parsing in the library) is cached per query text, budget, mechanisms and
metadata version, because the rewritten query and its mechanisms hold no randomness: noise is drawn
afresh by each mechanism release. Planning also refuses what SmartNoise-SQL would let through but the
databases read otherwise, or could fail on depending on the rows (`smartnoise_sql_checks`), and keeps
the exact SQL text it checked. Execution runs that text where the data is (`DataSource.sql`: DuckDB
over memory or a Parquet file, without other file or network access, or inside PostgreSQL), then lets
SmartNoise-SQL add noise, censor rare dimensions and post-process.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import pandas as pd
from snsql import Privacy
from snsql.metadata import Metadata as SnsqlMetadata
from snsql.sql._mechanisms.base import Mechanism
from snsql.sql.odometer import OdometerHeterogeneous
from snsql.sql.privacy import Stat
from snsql.sql.private_reader import PrivateReader
from snsql.sql.reader.base import SqlReader

from lomas.core.errors import DPLibrary, InvalidQueryError
from lomas.core.frames import frame_to_tight
from lomas.core.metadata import DatetimeMetadata, Metadata
from lomas.core.requests import SmartnoiseSQLCostRequest, SmartnoiseSQLQueryRequest
from lomas.core.responses import SmartnoiseSQLResult
from lomas.server.data.base import TABLE_NAME, DataSource
from lomas.server.engines.base import Cost, Engine
from lomas.server.engines.smartnoise_sql_checks import check_query, checked_sql
from lomas.server.store.service import DatasetRecord

_SQL_DIALECT = "Postgres"  # DuckDB also reads the SQL that SmartNoise-SQL writes for PostgreSQL
_STATS = {stat.name: stat for stat in Stat}
_MECHANISMS = {mechanism.name: mechanism for mechanism in Mechanism}


def snsql_metadata(metadata: Metadata, censor_dims: bool) -> SnsqlMetadata:
    """The metadata in SmartNoise-SQL's own form, for the single table `df`."""
    table: dict[str, Any] = {
        "max_ids": metadata.max_ids,
        "rows": metadata.rows,
        "row_privacy": metadata.row_privacy,
        "censor_dims": censor_dims,
        "clamp_counts": True,
    }
    for name, column in metadata.columns.items():
        spec: dict[str, Any] = {"type": column.type, "nullable": column.nullable, "private_id": column.private_id}
        if not isinstance(column, DatetimeMetadata):
            for key in ("lower", "upper", "cardinality"):
                if getattr(column, key, None) is not None:
                    spec[key] = getattr(column, key)
        table[name] = spec
    return SnsqlMetadata.from_dict({"": {"": {TABLE_NAME: table}}})


class _NoDataReader(SqlReader):
    """Stands in for a database while planning: it refuses to execute anything."""

    def __init__(self) -> None:
        super().__init__(_SQL_DIALECT)

    def execute(self, query: str, *ignore: Any, accuracy: bool = False) -> list[Any]:
        raise RuntimeError("planning never reads data")


class _SourceReader(SqlReader):
    """Runs SmartNoise-SQL's rewritten (exact aggregate) query where the data is: DuckDB over memory or
    a Parquet file, or the PostgreSQL database itself. It runs the SQL text checked at planning, and
    nothing else."""

    def __init__(self, data: DataSource, sql: str) -> None:
        super().__init__(_SQL_DIALECT)
        self._data = data
        self._sql = sql

    def execute(self, query: str, *ignore: Any, accuracy: bool = False) -> list[Any]:
        if query != self._sql:
            raise RuntimeError("SmartNoise-SQL asked to run SQL other than the SQL checked at planning")
        names, rows = self._data.sql(self._sql)
        return [tuple(names), *rows]


class _PlannedReader(PrivateReader):
    """A PrivateReader that reuses a cached rewrite instead of rewriting the query again."""

    def __init__(self, reader: SqlReader, plan: _Prepared) -> None:
        super().__init__(reader, plan.metadata, privacy=plan.privacy)
        self._rewritten = (plan.subquery, plan.outer)

    def _rewrite_ast(self, query: Any) -> tuple[Any, Any]:
        self._options.max_contrib = query.max_ids
        self._refresh_options()
        return self._rewritten


@dataclass(frozen=True)
class _Prepared:
    """The library's view of one query: parsed, rewritten and priced. Shared, never mutated."""

    metadata: SnsqlMetadata
    privacy: Privacy
    query: Any
    subquery: Any
    outer: Any
    sql: str  # the text of `subquery`, checked (`smartnoise_sql_checks.checked_sql`): what runs on the data
    cost: Cost


@dataclass(frozen=True)
class SqlPlan:
    prepared: _Prepared
    postprocess: bool


class SmartnoiseSQLEngine(Engine[SmartnoiseSQLCostRequest, SqlPlan]):
    library = DPLibrary.SMARTNOISE_SQL

    def __init__(self, max_query_length: int, cache_size: int = 512) -> None:
        self._max_query_length = max_query_length
        self._cache: OrderedDict[tuple[Any, ...], _Prepared] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def plan(self, request: SmartnoiseSQLCostRequest, dataset: DatasetRecord) -> SqlPlan:
        if len(request.query_str) > self._max_query_length:
            raise InvalidQueryError(
                f"The query is {len(request.query_str)} characters long; the limit is {self._max_query_length}."
            )
        mechanisms = _checked_mechanisms(request.mechanisms)
        key = (dataset.key, request.query_str, request.epsilon, request.delta, mechanisms)
        with self._lock:
            prepared = self._cache.get(key)
            if prepared is not None:
                self._cache.move_to_end(key)
        if prepared is None:
            prepared = _prepare(request, dataset.metadata, mechanisms)
            with self._lock:
                self._cache[key] = prepared
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        postprocess = request.postprocess if isinstance(request, SmartnoiseSQLQueryRequest) else True
        return SqlPlan(prepared, postprocess)

    def cost(self, plan: SqlPlan) -> Cost:
        return plan.prepared.cost

    def needs_frame(self, plan: SqlPlan) -> bool:
        return False

    def run(self, plan: SqlPlan, data: DataSource) -> SmartnoiseSQLResult:
        prepared = plan.prepared
        reader = _PlannedReader(_SourceReader(data, prepared.sql), prepared)
        rows = reader._execute_ast(prepared.query, postprocess=plan.postprocess)
        if plan.postprocess:
            columns, *values = rows
        else:
            columns, values = [symbol.name for symbol in prepared.subquery._select_symbols], list(rows)
        return SmartnoiseSQLResult(df=frame_to_tight(pd.DataFrame(values, columns=columns)))


def _checked_mechanisms(mechanisms: dict[str, str]) -> tuple[tuple[str, str], ...]:
    for stat, mechanism in mechanisms.items():
        if stat not in _STATS:
            raise InvalidQueryError(f"Unknown statistic {stat!r} in mechanisms; use one of {sorted(_STATS)}.")
        if mechanism not in _MECHANISMS:
            raise InvalidQueryError(
                f"Unknown mechanism {mechanism!r} for {stat!r}; use one of {sorted(_MECHANISMS)}."
            )
    return tuple(sorted(mechanisms.items()))


def _prepare(
    request: SmartnoiseSQLCostRequest, metadata: Metadata, mechanisms: tuple[tuple[str, str], ...]
) -> _Prepared:
    privacy = Privacy(epsilon=request.epsilon, delta=request.delta)
    for stat, mechanism in mechanisms:
        privacy.mechanisms.map[_STATS[stat]] = _MECHANISMS[mechanism]
    try:
        sn_metadata = snsql_metadata(metadata, metadata.censor_dims)
        query = PrivateReader(_NoDataReader(), sn_metadata, privacy=privacy).parse_query_string(request.query_str)
        if not metadata.censor_dims and not _groups_by_public_keys(query, metadata):
            # Only declared categories, unfiltered, are public: other GROUP BY keys are thresholded.
            sn_metadata = snsql_metadata(metadata, True)
            query = PrivateReader(_NoDataReader(), sn_metadata, privacy=privacy).parse_query_string(request.query_str)
    except Exception as error:  # the library's parser reports unsupported SQL this way
        raise InvalidQueryError(f"Unsupported or invalid SmartNoise-SQL query: {error}") from error
    check_query(query, metadata)  # before the library's rewriter, which parses the query again
    try:
        planner = PrivateReader(_NoDataReader(), sn_metadata, privacy=privacy)
        planner._options.censor_dims = query.censor_dims
        subquery, outer = planner._rewrite_ast(query)
        mechanisms_used = [symbol.mechanism for symbol in subquery._select_symbols]
    except Exception as error:  # the library's rewriter reports unsupported SQL this way
        raise InvalidQueryError(f"Unsupported or invalid SmartNoise-SQL query: {error}") from error
    sql = checked_sql(subquery)
    _check_runnable(query, subquery, mechanisms_used)
    odometer = OdometerHeterogeneous(privacy)
    for mechanism in mechanisms_used:
        if mechanism is not None:
            odometer.spend(Privacy(epsilon=mechanism.epsilon, delta=mechanism.delta))
    epsilon, delta = odometer.spent
    return _Prepared(sn_metadata, privacy, query, subquery, outer, sql, Cost(float(epsilon), float(delta)))


def _groups_by_public_keys(query: Any, metadata: Metadata) -> bool:
    """Whether the GROUP BY keys may be released without threshold: one public-key column
    (`Metadata.has_public_keys`) and no WHERE. Which declared categories still have rows after a WHERE
    depends on private values (`WHERE bill_length_mm > 58 GROUP BY species` told exactly which species
    have such a bird: found in review)."""
    if query.agg is None:
        return True
    if query.where is not None:
        return False
    names = [getattr(grouping.expression, "name", None) for grouping in query.agg.groupingExpressions]
    return None not in names and metadata.has_public_keys([str(name) for name in names])


def _check_runnable(query: Any, subquery: Any, mechanisms: list[Any]) -> None:
    """Refuse before any data is read what SmartNoise-SQL would only refuse while executing."""
    if not any(mechanism is not None for mechanism in mechanisms):
        raise InvalidQueryError("The query has no differentially private aggregate (COUNT, SUM, AVG...).")
    if any(mechanism is not None and mechanism.sensitivity == float("inf") for mechanism in mechanisms):
        raise InvalidQueryError("The query aggregates a column without bounds; declare lower and upper in the metadata.")
    if query.censor_dims:
        key_counts = [symbol.is_key_count for symbol in subquery._select_symbols]
        if not any(key_counts):
            raise InvalidQueryError("The query needs a key count to censor rare dimensions.")
        try:
            _ = mechanisms[key_counts.index(True)].threshold  # computing the threshold checks delta
        except ValueError as error:
            raise InvalidQueryError(f"Rare GROUP BY keys are censored: {error}") from error
