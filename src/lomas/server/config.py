"""Server settings: defaults < YAML config file < `LOMAS_*` environment variables < command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, HttpUrl, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

CONFIG_FILE_ENV = "LOMAS_CONFIG_FILE"


# Asymmetric signatures only: "none" and the HMAC family (HS*) are never accepted, since an HS* token
# "signed" with the provider's public key would verify against it.
OIDC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "ES256K", "EdDSA"}
)


class OIDCSettings(BaseModel):
    """Access tokens (JWTs) of an external OpenID Connect identity provider."""

    issuer: str = Field(min_length=1, description="Expected `iss` claim: the provider's issuer URL.")
    audience: str = Field(min_length=1, description="Expected `aud` claim: the audience of this Lomas server.")
    jwks_url: HttpUrl = Field(description="The provider's JWKS (public signing keys), http(s).")
    user_claim: str = Field(
        default="preferred_username", min_length=1, description="Claim whose value is the Lomas user name."
    )
    algorithms: list[str] = Field(
        default=["RS256", "ES256"],
        min_length=1,
        description=f"Accepted signature algorithms, among {', '.join(sorted(OIDC_ALGORITHMS))}.",
    )
    leeway_s: float = Field(default=60.0, ge=0, description="Clock skew allowed on `exp`, `nbf` and `iat`.")
    jwks_cache_s: float = Field(default=300.0, gt=0, description="How long the fetched JWKS is reused.")

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, algorithms: list[str]) -> list[str]:
        refused = [algorithm for algorithm in algorithms if algorithm not in OIDC_ALGORITHMS]
        if refused:
            raise ValueError(
                f"unsupported algorithm(s) {refused}: only {', '.join(sorted(OIDC_ALGORITHMS))} are accepted"
            )
        return algorithms


class AuthSettings(BaseModel):
    """How callers are identified."""

    open_mode: bool = Field(
        default=False,
        description="Trust the unauthenticated 0.4 `user-name` header. Only for demos and trusted networks.",
    )
    oidc: OIDCSettings | None = Field(
        default=None, description="Also accept JWT access tokens of an OpenID Connect provider. None: off."
    )


class LimitSettings(BaseModel):
    """Ceilings on what one request may ask for."""

    max_dummy_rows: int = Field(default=100_000, gt=0)
    max_query_length: int = Field(default=10_000, gt=0)


class OpenDPSettings(BaseModel):
    """The OpenDP engine. Library features are switched on here, never by a request.

    The features are process-wide switches of the OpenDP library, set once when the server starts.
    SmartNoise-SQL switches `contrib` and `floating-point` on itself whenever it builds a mechanism, so
    turning those two off only holds in a server that never runs SmartNoise-SQL queries. (SmartNoise-Synth
    does the same, but only inside its own training processes.) Nothing switches `honest-but-curious` on.
    """

    contrib: bool = Field(
        default=True, description="OpenDP's `contrib` feature; every constructor of the allow-list needs it."
    )
    floating_point: bool = Field(
        default=True,
        description="OpenDP's `floating-point` feature (noise on floats). OpenDP 0.14 no longer checks it; "
        "it is kept so that Lomas 0.4 configurations (OpenDP 0.10) keep their meaning.",
    )
    honest_but_curious: bool = Field(
        default=False,
        description="OpenDP's `honest-but-curious` feature; nothing on the allow-list needs it. Leave off.",
    )
    max_json_length: int = Field(
        default=200_000, gt=0, description="Characters of `opendp_json` in one request."
    )
    max_nodes: int = Field(default=1_000, gt=0, description="JSON objects and arrays in one pipeline.")
    max_depth: int = Field(default=64, gt=0, description="Nesting depth of the JSON of one pipeline.")
    max_list_length: int = Field(
        default=10_000, gt=0, description="Items of one list argument (categories, column names)."
    )
    max_string_length: int = Field(default=1_000, gt=0, description="Characters of one string in a pipeline.")
    max_size: int = Field(
        default=10_000_000,
        gt=0,
        description="Largest `size` of `make_resize` or `vector_domain`: rows a pipeline may materialise "
        "(and never more than twice the dataset's `rows`).",
    )
    cache_size: int = Field(
        default=512, gt=0, description="Built pipelines kept, by JSON, fixed_delta and dataset version."
    )
    max_concurrent_runs: int = Field(
        default=2,
        gt=0,
        description="opendp_logger pipelines on large datasets (16 MiB and more in memory) running at once "
        "in one process; each holds about 0.9 GB per million rows of the dataset while it runs.",
    )
    polars_max_plan_chars: int = Field(
        default=1_000_000, gt=0, description="Characters of a polars plan (opendp_json) in one request."
    )
    polars_max_plan_nodes: int = Field(
        default=5_000, gt=0, description="JSON objects and arrays of one polars plan."
    )


class DiffPrivLibSettings(BaseModel):
    """The DiffPrivLib engine: ceilings on what one pipeline may ask for, and how its score is computed."""

    max_pipeline_length: int = Field(
        default=100_000, gt=0, description="Characters of `diffprivlib_json` accepted in one request."
    )
    max_steps: int = Field(default=10, gt=0, description="Steps of one pipeline.")
    max_iter: int = Field(default=1_000, gt=0, description="Largest `max_iter` of a LogisticRegression.")
    max_estimators: int = Field(
        default=100, gt=0, description="Largest `n_estimators` of a RandomForestClassifier."
    )
    max_depth: int = Field(
        default=12, gt=0, description="Largest `max_depth` of a decision tree or random forest."
    )
    max_tree_nodes: int = Field(
        default=2**16,
        gt=0,
        description="Nodes of all the trees of one step together (a tree of depth d has 2^(d+1) - 1 nodes); "
        "bounds the fitting time and the size of the returned model.",
    )
    max_clusters: int = Field(default=100, gt=0, description="Largest `n_clusters` of a KMeans.")
    min_epsilon: float = Field(
        default=1e-3,
        gt=0,
        description="Smallest epsilon of one step: below it diffprivlib's bounded Laplace sampling can loop "
        "for ever (1e-8 did), holding a job worker.",
    )
    score_rows: int = Field(
        default=1_000,
        gt=0,
        description="Rows of the dummy dataset (generated from the metadata) on which the returned score is "
        "computed; the score never uses private data.",
    )


class SmartnoiseSynthSettings(BaseModel):
    """The SmartNoise-Synth engine: ceilings on what one request may ask for, and how training runs.

    Every training runs in a child process of its own (see the engine), so that a hard time limit can stop
    it and the library's process-wide state (random generators, printed output) stays out of the server.
    """

    max_training_seconds: float = Field(
        default=1800.0,
        gt=0,
        description="Wall-clock limit of one training and its sampling; then the training process is killed. "
        "Keep it well below `reservation_timeout_s`, which must also cover the wait for a job worker.",
    )
    max_concurrent_trainings: int = Field(
        default=2, gt=0, description="Trainings that run at the same time in one server process; others wait."
    )
    torch_threads: int = Field(default=1, gt=0, description="`torch.set_num_threads` of a training process.")
    max_samples: int = Field(default=100_000, gt=0, description="Largest `nb_samples` (rows returned).")
    max_condition_length: int = Field(default=1_000, gt=0, description="Characters of a `condition`.")
    max_condition_rounds: int = Field(
        default=10, gt=0, description="Rejection-sampling rounds for a `condition`; fewer rows may come back."
    )
    max_constraints_length: int = Field(
        default=100_000, gt=0, description="Characters of the `constraints` JSON."
    )
    max_epochs: int = Field(default=1_000, gt=0, description="Largest `epochs` of dpctgan and dpgan.")
    max_batch_size: int = Field(default=10_000, gt=0, description="Largest `batch_size` of the GANs.")
    max_layer_width: int = Field(
        default=1_024,
        gt=0,
        description="Largest embedding or latent dimension, and width of a generator or discriminator layer.",
    )
    max_layers: int = Field(default=8, gt=0, description="Layers of `generator_dim` or `discriminator_dim`.")
    max_iterations: int = Field(
        default=1_000,
        gt=0,
        description="Largest iteration count: mwem `iterations` and `mult_weights_iterations`, aim `rounds`, "
        "PATE `teacher_iters` and `student_iters`.",
    )
    max_queries: int = Field(default=10_000, gt=0, description="Largest mwem `q_count`.")
    default_bins: int = Field(
        default=10,
        gt=1,
        description="Bins of a numeric or datetime column for mwem, aim and mst, unless a constraint says.",
    )
    max_bins: int = Field(default=1_000, gt=1, description="Largest `bins` of a BinTransformer constraint.")
    max_categories: int = Field(
        default=1_000,
        gt=0,
        description="An integer column without categories may be encoded as categorical (its range "
        "lower..upper) if it has at most this many values.",
    )
    max_histogram_cells: int = Field(
        default=10_000_000,
        gt=0,
        description="Cells of one mwem histogram (numpy adds two outlier cells per dimension).",
    )
    max_marginal_cells: int = Field(
        default=100_000,
        gt=0,
        description="Cells of one aim or mst marginal (aim `max_cells`, mst column pairs).",
    )
    max_model_size_mb: float = Field(default=200.0, gt=0, description="Largest aim `max_model_size`, in MB.")
    faker_providers: list[str] = Field(
        default=[
            "name",
            "first_name",
            "last_name",
            "email",
            "safe_email",
            "user_name",
            "phone_number",
            "address",
            "street_address",
            "city",
            "country",
            "postcode",
            "company",
            "job",
            "ssn",
            "uuid4",
            "iban",
            "ipv4",
        ],
        description="Faker methods an AnonymizationTransformer constraint may name (it fills a text column "
        "with fake values and never reads the real ones).",
    )


class JobSettings(BaseModel):
    """Background jobs: queries a client asks to run asynchronously (`Prefer: respond-async`)."""

    workers: int = Field(default=2, gt=0, description="Jobs that run at the same time in one server process.")
    max_per_user: int = Field(
        default=2,
        gt=0,
        description="Long queries (jobs, DiffPrivLib and SmartNoise-Synth) one user may have queued or running "
        "in one server process.",
    )


class DataSettings(BaseModel):
    """Where private data is read from and how much of it is kept in memory."""

    cache_max_bytes: int | None = Field(
        default=4 * 2**30,
        gt=0,
        description="Memory for loaded datasets (Arrow tables and the pandas and polars forms made from them); "
        "the least recently used are dropped past it. None: no limit. The dataset in use is kept even if "
        "it alone is larger.",
    )
    download_dir: Path | None = Field(
        default=None, description="Where HTTP and S3 files are downloaded to; default: <data_dir>/downloads."
    )
    max_download_bytes: int = Field(
        default=50 * 2**30, gt=0, description="Largest HTTP or S3 file downloaded."
    )
    download_timeout_s: float = Field(
        default=60.0, gt=0, description="Connect and read timeout of each network operation of a download."
    )
    max_download_s: float = Field(
        default=3600.0, gt=0, description="Longest an HTTP or S3 download may take."
    )
    postgres_statement_timeout_s: float = Field(
        default=300.0, gt=0, description="Longest query a PostgreSQL dataset may run."
    )
    duckdb_memory_limit: str | None = Field(
        default=None,
        description="DuckDB's working memory for the SQL of one dataset (in memory or scanned), e.g. '1GB'. "
        "Default: DuckDB's (80% of RAM).",
    )


class Settings(BaseSettings):
    """Everything the server reads at start-up."""

    model_config = SettingsConfigDict(env_prefix="LOMAS_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./lomas-data")
    admin_db_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the admin store; default: SQLite in the data dir."
    )
    demo: bool = False
    workers: int = Field(default=1, gt=0, description="Server processes (uvicorn workers).")
    threads: int = Field(default=8, gt=0, description="Threads that run DP work off the event loop.")
    duckdb_threads: int = Field(
        default=1,
        gt=0,
        description="Threads of one SQL scan of a private dataset. One suits many small queries at once (two "
        "made a 344-row COUNT 2.5 ms slower on 2 cores); more speed up large GROUP BYs when requests are few.",
    )
    reservation_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        description="A budget reservation older than this belongs to a crashed execution and is charged.",
    )
    secrets_file: Path | None = Field(
        default=None,
        description="YAML file of the credentials that dataset accesses reference by name (S3 keys, PostgreSQL "
        "URLs, HTTP headers); LOMAS_SECRETS__* variables add to it. Never stored in the admin store.",
    )
    data: DataSettings = DataSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitSettings = LimitSettings()
    jobs: JobSettings = JobSettings()
    opendp: OpenDPSettings = OpenDPSettings()
    diffprivlib: DiffPrivLibSettings = DiffPrivLibSettings()
    smartnoise_synth: SmartnoiseSynthSettings = SmartnoiseSynthSettings()

    @model_validator(mode="after")
    def _reservations_outlive_trainings(self) -> Settings:
        """A training still running when its reservation expires would be charged as a crashed query and
        its answer would not be archived: reservations must outlive the longest training."""
        if self.reservation_timeout_s <= self.smartnoise_synth.max_training_seconds:
            raise ValueError(
                f"reservation_timeout_s ({self.reservation_timeout_s}) must be longer than "
                f"smartnoise_synth.max_training_seconds ({self.smartnoise_synth.max_training_seconds})."
            )
        return self

    @property
    def store_url(self) -> str:
        if self.admin_db_url:
            return self.admin_db_url
        return f"sqlite:///{(self.data_dir / 'lomas.db').resolve()}"

    @property
    def download_dir(self) -> Path:
        return self.data.download_dir or self.data_dir / "downloads"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read the settings, with `overrides` (the command line) taking precedence over everything."""
    if config_file is not None:
        if not config_file.is_file():
            raise FileNotFoundError(f"Config file not found: {config_file}")
        os.environ[CONFIG_FILE_ENV] = str(config_file)
    return Settings(**{key: value for key, value in overrides.items() if value is not None})
