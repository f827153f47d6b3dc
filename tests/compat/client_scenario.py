"""What a researcher does with the published lomas-client 0.4.1, recorded as JSON.

Run by the python of the compat environment (see build_venv.py), never by the project's own venv:

    .venv-compat/bin/python tests/compat/client_scenario.py http://127.0.0.1:PORT

It uses the client exactly as documented (as "Dr. Antartica" on PENGUIN of a fresh demo server) and
prints ONE JSON object on stdout: for every step, either {"ok": true, "value": ...} with what the user
observed (types, values, budgets), or {"ok": false, "exception": ..., "traceback": ...} if the client
raised where it should not have. Steps that are meant to fail record {"ok": true, "value": {"raised":
<exception class>, "module": ..., "message": ...}}. Everything else the client or its libraries print
goes to stderr. The script itself asserts nothing: the test (test_compat_lomas_client_041.py) does.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

USER = "Dr. Antartica"
DATASET = "PENGUIN"
UNGRANTED_DATASET = "IRIS"  # exists, but Dr. Antartica has no budget on it
UNKNOWN_USER = "Nobody Known"
DATETIME_USER, DATETIME_DATASET = "Dr. House", "PATIENTS"  # extra: a schema with datetime/boolean columns

COUNT_QUERY = "SELECT COUNT(*) AS nb_penguins FROM df"
COUNT_EPSILON, COUNT_DELTA = 1.0, 1e-5
GROUP_QUERY = "SELECT species, AVG(bill_length_mm) AS avg_bill_length_mm FROM df GROUP BY species"
GROUP_EPSILON, GROUP_DELTA = 2.0, 1e-5
INVALID_QUERY = "SELECT nonsense FROM nowhere WHERE"
OVER_BUDGET_EPSILON = 50.0  # the initial budget is 10
DUMMY_ROWS, DUMMY_SEED = 25, 7


def type_name(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def describe_frame(frame: Any) -> dict[str, Any]:
    """What a user sees of a DataFrame: type, shape, columns, dtypes, content."""
    if not hasattr(frame, "dtypes"):
        return {"type": type_name(frame), "repr": repr(frame)[:2000]}
    return {
        "type": type_name(frame),
        "shape": list(frame.shape),
        "columns": [str(column) for column in frame.columns],
        "dtypes": {str(column): str(dtype) for column, dtype in frame.dtypes.items()},
        "null_counts": {str(column): int(count) for column, count in frame.isna().sum().items()},
        # Missing values (NaN, NA, NaT) as JSON null.
        "tight": frame.astype(object).where(frame.notna(), None).to_dict(orient="tight"),
    }


def describe_model(model: Any) -> dict[str, Any]:
    """A pydantic response model of lomas_core: its class and fields."""
    dumped = model.model_dump() if hasattr(model, "model_dump") else repr(model)
    return {"type": type_name(model), "fields": dumped}


def describe_query_response(response: Any) -> dict[str, Any]:
    result = response.result
    return {
        "type": type_name(response),
        "epsilon": response.epsilon,
        "delta": response.delta,
        "requested_by": response.requested_by,
        "result_type": type_name(result),
        "res_type": str(getattr(result, "res_type", None)),
        "df": describe_frame(getattr(result, "df", None)),
    }


def expect_error(action: Callable[[], Any]) -> dict[str, Any]:
    """Run an action that should raise; record what was raised (or what was returned instead)."""
    try:
        returned = action()
    except Exception as error:  # noqa: BLE001 - the point is to record whatever the client raises
        return {
            "raised": type(error).__name__,
            "module": type(error).__module__,
            "message": str(getattr(error, "error_message", error)),
            "library": str(getattr(error, "library", "")) or None,
            "traceback": traceback.format_exc(),
        }
    return {"raised": None, "returned": repr(returned)[:2000]}


class Recorder:
    def __init__(self) -> None:
        self.steps: dict[str, Any] = {}

    def step(self, name: str, action: Callable[[], Any]) -> Any:
        """Run one step; record its value, or the unexpected exception and its traceback."""
        started = time.monotonic()
        try:
            value = action()
        except Exception as error:  # noqa: BLE001
            self.steps[name] = {
                "ok": False,
                "exception": f"{type(error).__module__}.{type(error).__name__}",
                "message": str(getattr(error, "error_message", error)),
                "traceback": traceback.format_exc(),
                "seconds": round(time.monotonic() - started, 3),
            }
            return None
        self.steps[name] = {"ok": True, "value": value, "seconds": round(time.monotonic() - started, 3)}
        return value


def budgets(client: Any) -> dict[str, Any]:
    return {
        "initial": describe_model(client.get_initial_budget()),
        "spent": describe_model(client.get_total_spent_budget()),
        "remaining": describe_model(client.get_remaining_budget()),
    }


def spent_around(client: Any, action: Callable[[], Any]) -> dict[str, Any]:
    """Spent budget and number of archived queries before and after an action."""
    before = client.get_total_spent_budget().model_dump()
    queries_before = len(client.get_previous_queries())
    outcome = action()
    return {
        "outcome": outcome,
        "spent_before": before,
        "spent_after": client.get_total_spent_budget().model_dump(),
        "previous_queries_before": queries_before,
        "previous_queries_after": len(client.get_previous_queries()),
    }


def scenario(url: str) -> dict[str, Any]:
    # Client() starts OpenTelemetry exporters towards localhost:4317 (lomas_core.instrumentation). With no
    # collector there, their retries delay the interpreter's exit by minutes: disable the SDK, as a
    # researcher without a collector would. Nothing in the client's HTTP traffic depends on it.
    os.environ.setdefault("OTEL_SDK_DISABLED", "true")
    import lomas_client
    from lomas_client.client import Client

    rec = Recorder()
    rec.steps["client_module"] = {"ok": True, "value": lomas_client.__file__}
    client = rec.step("client", lambda: Client(url, USER, DATASET))
    if client is None:
        return rec.steps
    sql = client.smartnoise_sql

    # Discover the dataset.
    def metadata() -> dict[str, Any]:
        value = client.get_dataset_metadata()
        return {"type": type_name(value), "value": value}

    rec.step("metadata", metadata)
    rec.step(
        "dummy_dataset", lambda: describe_frame(client.get_dummy_dataset(nb_rows=DUMMY_ROWS, seed=DUMMY_SEED))
    )
    rec.step(
        "dummy_dataset_same_seed_is_equal",
        lambda: bool(
            client.get_dummy_dataset(nb_rows=DUMMY_ROWS, seed=DUMMY_SEED).equals(
                client.get_dummy_dataset(nb_rows=DUMMY_ROWS, seed=DUMMY_SEED)
            )
        ),
    )
    rec.step("dummy_dataset_default_arguments", lambda: describe_frame(client.get_dummy_dataset()))

    # Budget and history before spending anything.
    rec.step("budgets_before", lambda: budgets(client))
    rec.step("previous_queries_before", lambda: client.get_previous_queries())

    # Develop on dummy data: no cost.
    rec.step(
        "dummy_query",
        lambda: spent_around(
            client,
            lambda: describe_query_response(
                sql.query(
                    COUNT_QUERY, COUNT_EPSILON, COUNT_DELTA, dummy=True, nb_rows=DUMMY_ROWS, seed=DUMMY_SEED
                )
            ),
        ),
    )
    rec.step(
        "dummy_group_query",
        lambda: describe_query_response(
            sql.query(GROUP_QUERY, GROUP_EPSILON, GROUP_DELTA, dummy=True, nb_rows=200, seed=3)
        ),
    )

    # Ask the cost, then spend.
    rec.step("count_cost", lambda: describe_model(sql.cost(COUNT_QUERY, COUNT_EPSILON, COUNT_DELTA)))
    rec.step(
        "count_query", lambda: describe_query_response(sql.query(COUNT_QUERY, COUNT_EPSILON, COUNT_DELTA))
    )
    rec.step("budgets_after_count", lambda: budgets(client))
    rec.step(
        "group_cost", lambda: describe_model(sql.cost(GROUP_QUERY, GROUP_EPSILON, GROUP_DELTA, mechanisms={}))
    )
    rec.step(
        "group_query",
        lambda: describe_query_response(
            sql.query(GROUP_QUERY, GROUP_EPSILON, GROUP_DELTA, mechanisms={}, postprocess=True)
        ),
    )

    # Errors a user runs into.
    rec.step(
        "unknown_user_metadata",
        lambda: expect_error(lambda: Client(url, UNKNOWN_USER, DATASET).get_dataset_metadata()),
    )
    rec.step(
        "unknown_user_remaining_budget",
        lambda: expect_error(lambda: Client(url, UNKNOWN_USER, DATASET).get_remaining_budget()),
    )
    rec.step(
        "unknown_user_query",
        lambda: expect_error(
            lambda: Client(url, UNKNOWN_USER, DATASET).smartnoise_sql.query(
                COUNT_QUERY, COUNT_EPSILON, COUNT_DELTA
            )
        ),
    )
    rec.step(
        "ungranted_dataset_metadata",
        lambda: expect_error(lambda: Client(url, USER, UNGRANTED_DATASET).get_dataset_metadata()),
    )
    rec.step(
        "ungranted_dataset_dummy",
        lambda: expect_error(lambda: Client(url, USER, UNGRANTED_DATASET).get_dummy_dataset(nb_rows=5)),
    )
    rec.step(
        "ungranted_dataset_initial_budget",
        lambda: expect_error(lambda: Client(url, USER, UNGRANTED_DATASET).get_initial_budget()),
    )
    rec.step(
        "ungranted_dataset_query",
        lambda: expect_error(
            lambda: Client(url, USER, UNGRANTED_DATASET).smartnoise_sql.query(
                "SELECT COUNT(*) AS n FROM df", COUNT_EPSILON, COUNT_DELTA
            )
        ),
    )
    rec.step(
        "invalid_query",
        lambda: spent_around(
            client, lambda: expect_error(lambda: sql.query(INVALID_QUERY, COUNT_EPSILON, COUNT_DELTA))
        ),
    )
    rec.step(
        "invalid_query_cost",
        lambda: expect_error(lambda: sql.cost(INVALID_QUERY, COUNT_EPSILON, COUNT_DELTA)),
    )
    rec.step(
        "invalid_dummy_query",
        lambda: expect_error(lambda: sql.query(INVALID_QUERY, COUNT_EPSILON, COUNT_DELTA, dummy=True)),
    )
    rec.step(
        "over_budget_cost", lambda: describe_model(sql.cost(COUNT_QUERY, OVER_BUDGET_EPSILON, COUNT_DELTA))
    )
    rec.step(
        "over_budget_query",
        lambda: spent_around(
            client, lambda: expect_error(lambda: sql.query(COUNT_QUERY, OVER_BUDGET_EPSILON, COUNT_DELTA))
        ),
    )

    # Budget and history at the end.
    rec.step("budgets_after", lambda: budgets(client))
    rec.step("previous_queries_after", lambda: client.get_previous_queries())

    # Extra: the dummy dataset of a schema with datetime, boolean and 32-bit columns (another demo user).
    rec.step(
        "datetime_dummy_dataset",
        lambda: describe_frame(
            Client(url, DATETIME_USER, DATETIME_DATASET).get_dummy_dataset(
                nb_rows=DUMMY_ROWS, seed=DUMMY_SEED
            )
        ),
    )
    return rec.steps


def to_json(value: Any) -> Any:
    """json.dumps fallback for numpy scalars, timestamps and the like."""
    if hasattr(value, "item"):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return repr(value)


def main(argv: list[str], run: Callable[[str], dict[str, Any]] | None = None) -> int:
    """Run a scenario (this file's by default) against the server URL in argv; print its JSON report."""
    run = run or scenario
    if len(argv) != 2:
        print(f"usage: {argv[0]} SERVER_URL", file=sys.stderr)
        return 2
    # stdout carries exactly one JSON object: anything printed by the client or its libraries goes to stderr.
    real_stdout, sys.stdout = sys.stdout, sys.stderr
    started = time.monotonic()
    try:
        steps = run(argv[1].rstrip("/"))
    except Exception:  # noqa: BLE001 - import errors and the like still produce a JSON report
        steps = {"scenario": {"ok": False, "exception": "crash", "traceback": traceback.format_exc()}}
    report = {"python": sys.version, "seconds": round(time.monotonic() - started, 3), "steps": steps}
    real_stdout.write(json.dumps(report, default=to_json) + "\n")
    real_stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
