"""DiffPrivLib engine: scikit-learn pipelines of `diffprivlib.models`, fitted on the private data.

The request carries the pipeline as diffprivlib_logger JSON (what lomas-client 0.4.1 sends):
`{"module": "diffprivlib", "version": ..., "pipeline": [{"type": "_dpl_type:StandardScaler", "name": ...,
"params": {...}}, ...]}`, with tuples as `{"_tuple": true, "_items": [...]}` and accountants as
`"_dpl_instance:BudgetAccountant"` (the format is shared with the client in `lomas.core.diffprivlib_models`).
It is parsed as plain data (`pipeline`), checked against the allow-list (`allow_list`, `checks`) and the
metadata (`plan`), fitted (`fitting`) and released (`fitted`) by `DiffPrivLibEngine` (`engine`).

Privacy, step by step:
- Allow-list: a fixed set of classes, each with the parameters it may take and their types and ranges
  (sizes capped by `DiffPrivLibSettings`). The parameters that keep a model from looking at the data
  to find its own bounds (`bounds`, `bounds_X`, `bounds_y`, `data_norm`, and `classes` for trees) are
  required, so the library never reaches the code that would raise a `PrivacyLeakWarning`. As a second
  line, the engine turns `PrivacyLeakWarning` into an error with one process-wide filter installed at
  construction (never per request: `warnings.catch_warnings` is not thread-safe).
- Cost: the sum of the steps' declared epsilons (omitted ones take the class default, read from its
  signature); every allowed class spends (epsilon, 0). It is computed without fitting anything.
- Accountants: each step gets a fresh `BudgetAccountant` capped at its declared (epsilon, 0), never the
  library's default; after fitting, each must have spent no more than that.
- Seeds: `random_state` (an integer or null) is honoured on dummy data only. On private data it is
  replaced by null, so that the noise comes from the library's secure sampler: a seed chosen by the
  caller would make the noise reproducible, and the model no longer DP.
- Missing values: "drop" drops the rows with a missing feature or target. "mean", "median" and
  "most_frequent" fill them with values from the public metadata, never with statistics of the private
  data (one person could then change the fill value of every missing cell): the midpoint of the declared
  bounds for numeric columns (the mean and median of the uniform distribution over them; the metadata
  knows no mode), the first declared category for categorical columns, False for booleans. Values of a
  categorical target outside its declared categories count as missing.
- Score: computed on a dummy dataset from the metadata (`DiffPrivLibSettings.score_rows` rows), free;
  the model is trained on the training split of the private data and the test split is never used.
- Released model: fitted attributes that are not DP outputs (training row counts, training labels and
  inertia of KMeans, iteration counts, PCA singular values that give away the row count) are removed
  before the model is pickled (the 0.4 `model`) and written as JSON (`model_params`).
"""

from lomas.server.engines.diffprivlib.engine import DiffPrivLibEngine

__all__ = ["DiffPrivLibEngine"]
