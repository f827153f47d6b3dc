"""SmartNoise-Synth engine: differentially private synthetic data, as samples or as a trained synthesizer.

Synthesizers: mwem (epsilon only), aim and mst (epsilon, delta; marginal-based, "cube" encodings) and the
GANs dpctgan, pategan and dpgan (epsilon, delta; "gan" encodings). pacsynth is refused: it can bring the
whole process down (a Rust panic); patectgan too: its PATE accounting can overspend epsilon many times over.
mst models cannot be returned (they do not pickle).

Privacy, in short (each module's docstring has the details):
- `columns`, `encoding`: every column is encoded from the public metadata, with transformers fitted on
  public values only; no budget goes to preprocessing and free text must be dropped or faked.
- `constraints`: smartnoise_synth_logger JSON is parsed as data against an allow-list of transformers.
- `params`: `synth_params` are allow-listed per synthesizer; the cost is the declared epsilon and delta
  (mwem: no delta), with default deltas from the metadata's row count, never the private one.
- `limits`, `dp_sgd`: checks before any data is read; dpctgan and dpgan train only the epochs the DP-SGD
  accountant affords within epsilon.
- `training`: a child process per training, from a fork server, with a hard time limit and reseeded
  generators; the accountants snsynth exposes are checked after training.
- `stripping`: what a fitted synthesizer keeps of the private data is removed before sampling or pickling.
- `condition`, `sampling`: conditions are parsed (never evaluated as code) and applied to the samples with
  bounded rejection sampling.
- `engine`: plan, cost and run.
"""

from lomas.server.engines.smartnoise_synth.engine import SmartnoiseSynthEngine

__all__ = ["SmartnoiseSynthEngine"]
