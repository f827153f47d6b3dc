"""The published lomas-client 0.4.1 with its OpenDP, DiffPrivLib and SmartNoise-Synth helpers.

Run like client_scenario.py, by the python of the compat environment:

    .venv-compat/bin/python tests/compat/libraries_scenario.py http://127.0.0.1:PORT

As "Tintin" on PENGUIN (a user client_scenario.py does not touch), it builds pipelines with the
client's own libraries (opendp 0.10 + opendp_logger, diffprivlib 0.6.5, smartnoise-synth 1.0.4),
asks their cost, runs them on dummy and private data, and prints one JSON report of what the
researcher observed. It asserts nothing: test_compat_lomas_client_041.py does. Its top level imports
only the standard library, so that the test can read its constants.
"""

from __future__ import annotations

import os
import sys
from typing import Any

USER, DATASET = "Tintin", "PENGUIN"
FIXED_DELTA = 1e-5
DPL_FEATURES = ["bill_length_mm", "bill_depth_mm"]
DPL_TARGET = ["species"]
SYNTH_COLUMNS = ["species", "island", "sex"]
SYNTH_EPSILON = 1.0
NB_SAMPLES = 40


def describe_result(response: Any) -> dict[str, Any]:
    """A QueryResponse of any library: costs, result class and what the result holds."""
    from client_scenario import describe_frame, type_name

    result = response.result
    described: dict[str, Any] = {
        "type": type_name(response),
        "epsilon": response.epsilon,
        "delta": response.delta,
        "requested_by": response.requested_by,
        "result_type": type_name(result),
        "res_type": str(result.res_type),
    }
    if hasattr(result, "value"):
        described["value"] = result.value
    if hasattr(result, "score"):
        described["score"] = result.score
    if hasattr(result, "model"):
        described["model_type"] = type_name(result.model)
    if hasattr(result, "df_samples"):
        described["df_samples"] = describe_frame(result.df_samples)
    return described


def opendp_pipelines(columns: list[str]) -> dict[str, Any]:
    """The pipelines of the Lomas 0.4 OpenDP notebook, built with the client's opendp 0.10."""
    import opendp.prelude as dp
    from opendp_logger import enable_logging

    enable_logging()
    dp.enable_features("contrib")
    rows = dp.t.make_split_dataframe(separator=",", col_names=columns)
    count = rows >> dp.t.make_select_column(key="species", TOA=str) >> dp.t.then_count() >> dp.m.then_laplace(scale=2.0)
    mean = (
        rows
        >> dp.t.make_select_column(key="bill_length_mm", TOA=str)
        >> dp.t.then_cast_default(TOA=float)
        >> dp.t.then_clamp(bounds=(30.0, 65.0))
        >> dp.t.then_resize(size=346, constant=43.61)
        >> dp.t.then_mean()
    )
    return {"count": count, "mean_laplace": mean >> dp.m.then_laplace(scale=5.0), "mean_gaussian": mean >> dp.m.then_gaussian(scale=5.0)}


def diffprivlib_pipeline() -> Any:
    from diffprivlib import models
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [
            ("scaler", models.StandardScaler(bounds=([30.0, 13.0], [65.0, 23.0]), epsilon=0.5)),
            ("classifier", models.LogisticRegression(data_norm=83.7, epsilon=1.0)),
        ]
    )


def scenario(url: str) -> dict[str, Any]:
    os.environ.setdefault("OTEL_SDK_DISABLED", "true")  # see client_scenario.py
    import numpy as np
    from client_scenario import Recorder, describe_frame, describe_model, expect_error
    from lomas_client.client import Client

    rec = Recorder()
    client = rec.step("client", lambda: Client(url, USER, DATASET))
    if client is None:
        return rec.steps
    columns = list(client.get_dataset_metadata()["columns"])
    rec.steps["columns"] = {"ok": True, "value": columns}

    def spent() -> dict[str, Any]:
        return describe_model(client.get_total_spent_budget())

    # OpenDP: cost, dummy, then the private data.
    pipelines = opendp_pipelines(columns)
    rec.step("opendp_count_cost", lambda: describe_model(client.opendp.cost(pipelines["count"])))
    rec.step("opendp_count_dummy", lambda: describe_result(client.opendp.query(pipelines["count"], dummy=True)))
    rec.step("opendp_count", lambda: describe_result(client.opendp.query(pipelines["count"])))
    rec.step("opendp_mean_laplace", lambda: describe_result(client.opendp.query(pipelines["mean_laplace"])))
    rec.step(
        "opendp_mean_gaussian_cost",
        lambda: describe_model(client.opendp.cost(pipelines["mean_gaussian"], fixed_delta=FIXED_DELTA)),
    )
    rec.step(
        "opendp_mean_gaussian",
        lambda: describe_result(client.opendp.query(pipelines["mean_gaussian"], fixed_delta=FIXED_DELTA)),
    )
    rec.step("spent_after_opendp", spent)

    # DiffPrivLib: a scaler and a logistic regression; the 0.4.1 client unpickles the fitted pipeline.
    pipeline = diffprivlib_pipeline()
    dpl_args = {"feature_columns": DPL_FEATURES, "target_columns": DPL_TARGET, "test_size": 0.2, "test_train_split_seed": 4}
    rec.step("diffprivlib_cost", lambda: describe_model(client.diffprivlib.cost(pipeline, **dpl_args)))
    rec.step("diffprivlib_dummy", lambda: describe_result(client.diffprivlib.query(pipeline, **dpl_args, dummy=True)))

    def fitted() -> dict[str, Any]:
        response = client.diffprivlib.query(pipeline, **dpl_args)
        described = describe_result(response)
        probe = np.array([[39.0, 18.5], [47.0, 15.0], [50.0, 19.5]])
        described["predictions"] = [str(label) for label in response.result.model.predict(probe)]
        return described

    rec.step("diffprivlib_query", fitted)
    rec.step("spent_after_diffprivlib", spent)

    # SmartNoise-Synth: samples and the model.
    synth_args = {"synth_name": "mwem", "epsilon": SYNTH_EPSILON, "select_cols": SYNTH_COLUMNS, "synth_params": {}}
    rec.step("synth_cost", lambda: describe_model(client.smartnoise_synth.cost(**synth_args)))
    rec.step(
        "synth_dummy_samples",
        lambda: describe_result(client.smartnoise_synth.query(**synth_args, nb_samples=NB_SAMPLES, dummy=True)),
    )
    rec.step(
        "synth_samples", lambda: describe_result(client.smartnoise_synth.query(**synth_args, nb_samples=NB_SAMPLES))
    )

    def synth_model() -> dict[str, Any]:
        response = client.smartnoise_synth.query(**synth_args, return_model=True)
        described = describe_result(response)
        described["model_samples"] = describe_frame(response.result.model.sample(10))
        return described

    rec.step("synth_model", synth_model)
    rec.step("spent_after_synth", spent)
    rec.step("previous_queries", lambda: expect_error(client.get_previous_queries))
    return rec.steps


if __name__ == "__main__":
    from client_scenario import main

    sys.exit(main(sys.argv, scenario))
