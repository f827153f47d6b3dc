"""The OpenDP engine. A request's `opendp_json` holds a pipeline in one of two wire formats:

- an opendp_logger pipeline (`pipeline_type` other than "polars"), the format of Lomas 0.4:
  `{"version": "0.10.x" | "0.14.x", "ast": {...}}`, the tree of OpenDP constructor calls that
  opendp_logger records. It is checked against allow-lists and rebuilt with the server's OpenDP
  (`logger_ast`, `logger_constructors`), then fed the dataset as CSV text (`logger_engine`).
- a polars plan (`pipeline_type="polars"`), built with OpenDP's Context API: the JSON of
  `LazyFrame.serialize(format="json")` with the privacy loss it may spend. It is checked against an
  allow-list before polars reads it (`polars_checker`), made private by OpenDP against the server's
  domain and margins (`polars_domain`) and run on the dataset's polars frame (`polars_engine`).

Both are priced by their privacy map at d_in = the metadata's `max_ids` (`privacy.privacy_cost`).
`OpenDPEngine` (`engine`) dispatches between the two.
"""

from lomas.server.engines.opendp.engine import OpenDPEngine

__all__ = ["OpenDPEngine"]
