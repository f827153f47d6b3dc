"""`lomas-admin` registering and checking data of every kind: local files, HTTP(S), S3 and PostgreSQL.

Through the real CLI, against real loopback servers (http_fixture, s3_fixture: moto, pg_fixture): what
the administrator reads when the data does not match its metadata or cannot be reached, that nothing is
written then, and that no secret is ever printed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import psycopg
import pytest
import yaml
from test_admin_cli import Admin, make_admin, row, write_yaml

from lomas.server.config import CONFIG_FILE_ENV

if TYPE_CHECKING:
    from http_fixture import HttpServer

pytest_plugins = ["http_fixture", "s3_fixture"]

S3_KEY_ID = "AKIAADMINTESTKEY"
S3_SECRET = "s3-secret-never-printed"
PG_PASSWORD = "pg-password-never-printed"
BUCKET = "admin-data"
SECRET_VALUES = (S3_KEY_ID, S3_SECRET, PG_PASSWORD)

METADATA: dict[str, Any] = {
    "max_ids": 1,
    "rows": 6,
    "row_privacy": True,
    "censor_dims": False,
    "columns": {
        "species": {"type": "string", "cardinality": 2, "categories": ["Adelie", "Gentoo"]},
        "island": {"type": "string"},
        "bill_length_mm": {"type": "float", "lower": 30.0, "upper": 60.0},
        "flipper_mm": {"type": "int", "lower": 170, "upper": 235},
        "sex": {"type": "string", "nullable": True},
        "year": {"type": "int", "cardinality": 2, "categories": [2007, 2008]},
        "seen": {"type": "datetime", "lower": "2007-01-01", "upper": "2009-12-31"},
    },
}
GOOD = pd.DataFrame(
    {
        "species": ["Adelie", "Adelie", "Gentoo", "Gentoo", "Adelie", "Gentoo"],
        "island": ["Torgersen", "Torgersen", "Biscoe", "Biscoe", "Dream", "Biscoe"],
        "bill_length_mm": [39.1, 39.5, 46.1, 50.0, 37.0, 47.5],
        "flipper_mm": [181, 186, 211, 230, 190, 220],
        "sex": ["male", None, "female", "male", "female", None],
        "year": [2007, 2007, 2008, 2008, 2008, 2007],
        "seen": ["2007-06-01", "2007-06-02", "2008-07-01", "2008-07-02", "2009-01-01", "2009-12-30"],
    }
)
# Every check fails once: categories (string and int), nulls, float and datetime bounds.
BAD = GOOD.assign(
    species=["Adelie", "Emperor", "Gentoo", "King", "Emperor", "Gentoo"],
    island=["Torgersen", None, "Biscoe", "Biscoe", None, "Biscoe"],
    bill_length_mm=[25.5, 39.5, 61.0, 50.0, 37.0, 47.5],
    year=[2007, 2007, 2009, 2008, 2008, 2007],
    seen=["2007-06-01", "2007-06-02", "2008-07-01", "2010-05-01", "2009-01-01", "2009-12-30"],
)
BAD_PROBLEMS = [
    (
        "- column 'species': 2 values not among the declared categories, in 3 rows: 'Emperor' (2 rows), "
        "'King' (1 row); add them to categories (and cardinality) in the metadata, or fix the data."
    ),
    (
        "- column 'island': 2 missing values (null), but the metadata does not declare it nullable; set "
        "nullable: true in the metadata, or fill them in the data."
    ),
    (
        "- column 'bill_length_mm': values outside the declared bounds lower: 30.0, upper: 60.0: the minimum "
        "is 25.5 (below lower) and the maximum is 61.0 (above upper); widen lower/upper in the metadata, or "
        "fix the data."
    ),
    "- column 'year': 1 value not among the declared categories, in 1 row: 2009 (1 row);",
    (
        "- column 'seen': values outside the declared bounds lower: 2007-01-01 00:00:00, upper: 2009-12-31 "
        "00:00:00: the maximum is 2010-05-01 00:00:00 (above upper);"
    ),
]


@pytest.fixture(autouse=True)
def _no_caller_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the caller's LOMAS_* settings and secrets nor their AWS credentials may leak in."""
    monkeypatch.setenv(CONFIG_FILE_ENV, "")
    for key in [key for key in os.environ if key.startswith(("LOMAS_", "AWS_"))]:
        monkeypatch.delenv(key)


@pytest.fixture()
def admin(tmp_path: Path) -> Iterator[Admin]:
    runner = make_admin(tmp_path / "store")
    runner("users", "list")  # creates the store, so that `refused` can compare its state
    yield runner
    runner.engine.dispose()


@pytest.fixture()
def metadata_file(tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "penguins_metadata.yaml", METADATA)


def secrets_file(folder: Path, pg_url: str | None = None, token: str = "unused") -> Path:
    document: dict[str, Any] = {
        "s3": {"minio": {"access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET}},
        "http": {"portal": {"headers": {"Authorization": f"Bearer {token}"}}},
    }
    if pg_url is not None:
        document["postgresql"] = {"warehouse": {"url": pg_url}}
    return write_yaml(folder / "secrets.yaml", document)


def csv_file(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def parquet_file(path: Path, frame: pd.DataFrame) -> Path:
    frame.assign(seen=pd.to_datetime(frame["seen"])).to_parquet(path, index=False)
    return path


def no_secret_in(text: str) -> None:
    for value in SECRET_VALUES:
        assert value not in text


def refused(admin: Admin, *args: str | Path) -> str:
    """Run a command that must be refused; check that no secret is printed and nothing was written."""
    before = admin.state()
    stderr = admin(*args, code=2).stderr
    # The loopback HTTP server's thread may print a reset connection on the same (captured) stderr.
    assert "Error: " in stderr, stderr
    message = " ".join(stderr[stderr.index("Error: ") :].split())
    no_secret_in(message)
    assert admin.state() == before
    return message


# -- local files ----------------------------------------------------------------------------------
@pytest.mark.parametrize("write", [csv_file, parquet_file], ids=["csv", "parquet"])
def test_local_data_that_contradicts_its_metadata_lists_every_problem(
    admin: Admin, metadata_file: Path, tmp_path: Path, write: Any
) -> None:
    suffix = ".csv" if write is csv_file else ".parquet"
    bad = write(tmp_path / f"bad{suffix}", BAD)
    message = refused(admin, "datasets", "add", "P", "--metadata", metadata_file, "--path", bad)
    assert (
        f"Error: Refusing to register 'P': the data at {bad} does not match the metadata {metadata_file}; "
        "fix the data or the metadata (nothing was written):" in message
    )
    for problem in BAD_PROBLEMS:
        assert problem in message
    assert "flipper_mm" not in message and "'sex'" not in message  # within bounds, and nullable
    assert "--no-check" not in message  # the data was read: skipping the check is no fix

    good = write(tmp_path / f"good{suffix}", GOOD)
    output = admin("datasets", "add", "P", "--metadata", metadata_file, "--path", good).output
    assert f"data at {good} (checked: 6 rows match the metadata)" in output


def test_more_than_five_undeclared_categories_are_named_by_frequency(
    admin: Admin, metadata_file: Path, tmp_path: Path
) -> None:
    species = ["Emperor", "Emperor", "King", "Chinstrap", "Rockhopper", "Macaroni"]
    more = write_yaml(tmp_path / "m.yaml", METADATA | {"rows": 7})
    # Six undeclared values; the most frequent first, then by value ('Adélie' is not 'Adelie').
    frame = pd.concat([GOOD.assign(species=species), GOOD.head(1).assign(species="Adélie")])
    data = csv_file(tmp_path / "p.csv", frame)
    message = refused(admin, "datasets", "add", "P", "--metadata", more, "--path", data)
    assert (
        "column 'species': 6 values not among the declared categories, in 7 rows: 'Emperor' (2 rows), "
        "'Adélie' (1 row), 'Chinstrap' (1 row), 'King' (1 row), 'Macaroni' (1 row), and 1 more;" in message
    )


def test_row_count_more_rows_is_refused_fewer_is_a_warning(
    admin: Admin, metadata_file: Path, tmp_path: Path
) -> None:
    data = csv_file(tmp_path / "p.csv", GOOD)
    fewer = write_yaml(tmp_path / "fewer.yaml", METADATA | {"rows": 5})
    message = refused(admin, "datasets", "add", "P", "--metadata", fewer, "--path", data)
    assert (
        "- the data has 6 rows but the metadata declares rows: 5, and the server relies on it as an upper "
        "bound; set rows to at least 6 in the metadata." in message
    )
    more = write_yaml(tmp_path / "more.yaml", METADATA | {"rows": 10})
    result = admin("datasets", "add", "P", "--metadata", more, "--path", data)
    assert "checked: 6 rows match the metadata" in result.stdout
    assert (
        "Warning: the data has 6 rows and the metadata declares rows: 10; the difference is allowed (rows "
        "is an upper bound), but dummy data and size limits follow the metadata."
        in " ".join(result.stderr.split())
    )


def test_missing_and_uncastable_columns(admin: Admin, metadata_file: Path, tmp_path: Path) -> None:
    for name, write in (("p.csv", csv_file), ("p.parquet", parquet_file)):
        missing = write(tmp_path / f"missing_{name}", GOOD.drop(columns=["island", "year"]))
        message = refused(admin, "datasets", "add", "P", "--metadata", metadata_file, "--path", missing)
        assert (
            f"Refusing to register 'P': {missing} does not match its metadata: columns missing from the "
            "data: island, year." in message
        )
        assert "Nothing was written (skip this check with --no-check" in message
    text = csv_file(tmp_path / "text.csv", GOOD.assign(flipper_mm="long"))
    message = refused(admin, "datasets", "add", "P", "--metadata", metadata_file, "--path", text)
    assert (
        f"{text} does not match its metadata: columns that cannot be cast to their metadata type: flipper_mm"
        in message
    )
    assert "long" not in message.replace("--no-check", "")  # a value of the data is never quoted
    message = refused(
        admin, "datasets", "add", "P", "--metadata", metadata_file, "--path", tmp_path / "no.csv"
    )
    assert f"Refusing to register 'P': Data file not found: {tmp_path / 'no.csv'}." in message

    admin("datasets", "add", "P", "--metadata", metadata_file, "--path", tmp_path / "no.csv", "--no-check")
    assert (
        "(not checked)"
        in admin("datasets", "add", "Q", "--metadata", metadata_file, "--path", text, "--no-check").output
    )
    assert admin.store.list_datasets() == ["P", "Q"]


def test_location_options_are_checked_before_anything_is_read(admin: Admin, metadata_file: Path) -> None:
    add = ("datasets", "add", "P", "--metadata", metadata_file)
    assert (
        "Error: Give where the data is with exactly one of --path FILE, --url URL, --s3 s3://BUCKET/KEY or "
        "--postgresql TABLE." == refused(admin, *add)
    )
    assert "(not --path and --s3)." in refused(admin, *add, "--path", "a.csv", "--s3", "s3://b/k")
    assert "Error: --endpoint-url cannot be used with --path." == refused(
        admin, *add, "--path", "a.csv", "--endpoint-url", "http://x"
    )
    assert "Error: --format, --credentials cannot be used with --postgresql." == refused(
        admin, *add, "--postgresql", "t", "--connection", "c", "--format", "csv", "--credentials", "x"
    )
    assert "Error: --s3 must be s3://BUCKET/KEY, not 's3://bucket'." == refused(
        admin, *add, "--s3", "s3://bucket"
    )
    assert (
        "Error: Invalid data location: serve: scan reads Parquet files only; serve CSV files from memory."
        == refused(admin, *add, "--path", "a.csv", "--serve", "scan")
    )
    assert "Error: Invalid data location: --connection: Field required" == refused(
        admin, *add, "--postgresql", "t"
    )
    assert "--postgresql: table must be `name` or `schema.name`" in refused(
        admin, *add, "--postgresql", "x; DROP TABLE y", "--connection", "c"
    )
    assert "Invalid data location: --url: must be an http:// or https:// URL" in refused(
        admin, *add, "--url", "ftp://host/a.csv"
    )
    assert "--url: must not hold a user or password" in refused(
        admin, *add, "--url", "https://user:pw@host/a.csv"
    )
    assert "--credentials: String should match pattern" in refused(
        admin, *add, "--url", "https://host/a.csv", "--credentials", "no spaces"
    )


def test_scan_serves_parquet_and_is_checked(admin: Admin, metadata_file: Path, tmp_path: Path) -> None:
    good = parquet_file(tmp_path / "good.parquet", GOOD)
    admin("datasets", "add", "P", "--metadata", metadata_file, "--path", good, "--serve", "scan")
    assert admin.store.dataset("P").access == {
        "kind": "local",
        "path": str(good),
        "format": "parquet",
        "serve": "scan",
    }
    bad = parquet_file(tmp_path / "bad.parquet", BAD)
    message = refused(
        admin, "datasets", "add", "Q", "--metadata", metadata_file, "--path", bad, "--serve", "scan"
    )
    for problem in BAD_PROBLEMS:
        assert problem in message


def test_datasets_check_reports_data_that_changed_or_vanished(
    admin: Admin, metadata_file: Path, tmp_path: Path
) -> None:
    first = csv_file(tmp_path / "first.csv", GOOD)
    second = csv_file(tmp_path / "second.csv", GOOD)
    admin("datasets", "add", "A", "--metadata", metadata_file, "--path", first)
    admin("datasets", "add", "B", "--metadata", metadata_file, "--path", second)
    output = admin("datasets", "check").output
    assert f"A: OK, the data at {first} matches its metadata (6 rows)." in output
    assert f"B: OK, the data at {second} matches its metadata (6 rows)." in output

    csv_file(first, BAD)
    second.unlink()
    result = admin("datasets", "check", code=2)
    assert f"A: the data at {first} does not match its metadata:" in result.stdout
    for problem in BAD_PROBLEMS:
        assert problem in " ".join(result.stdout.split())
    assert f"B: cannot be read: Data file not found: {second}" in result.stdout
    assert result.stderr.strip() == "Error: 2 of 2 dataset(s) failed the check: A, B."
    assert "B: cannot be read" not in admin("datasets", "check", "A", code=2).stdout
    assert admin.fails("datasets", "check", "A", "NOPE") == "Error: No dataset named 'NOPE'."

    csv_file(first, GOOD.head(5))
    result = admin("datasets", "check", "A")
    assert (
        "A: OK" in result.stdout
        and "warning: the data has 5 rows and the metadata declares rows: 6" in result.stdout
    )


def test_import_path_db_checks_the_data_and_reports_the_entry(
    admin: Admin, metadata_file: Path, tmp_path: Path
) -> None:
    csv_file(tmp_path / "good.csv", GOOD)
    csv_file(tmp_path / "bad.csv", BAD)
    collection = write_yaml(
        tmp_path / "dataset_collection.yaml",
        {
            "datasets": [
                {
                    "dataset_name": name,
                    "dataset_access": {"database_type": "PATH_DB", "path": data},
                    "metadata_access": {"database_type": "PATH_DB", "path": metadata_file.name},
                }
                for name, data in (("GOOD", "good.csv"), ("BAD", "bad.csv"))
            ]
        },
    )
    message = refused(admin, "import", "datasets", collection)
    assert f"{collection} has 5 problem(s); nothing was written" in message
    assert (
        f"- datasets[1].dataset_access: the data at {tmp_path / 'bad.csv'} does not match its metadata: "
        "column 'species': 2 values not among the declared categories" in message
    )
    assert "datasets[0]" not in message

    write_yaml(collection, {"datasets": yaml.safe_load(collection.read_text())["datasets"][:1]})
    assert "dataset 'GOOD': registered" in admin("import", "datasets", collection).output
    assert "Nothing to change" in admin("import", "datasets", collection).output


# -- HTTP -----------------------------------------------------------------------------------------
@pytest.fixture()
def served(http_server: HttpServer, tmp_path: Path) -> dict[str, str]:
    """Good and bad penguins on the HTTP server (public and behind the token), by name."""
    folder = http_server.root / f"admin-{tmp_path.name}"
    folder.mkdir()
    csv_file(folder / "good.csv", GOOD)
    csv_file(folder / "bad.csv", BAD)
    parquet_file(folder / "good.parquet", GOOD)
    base = f"{http_server.url}/{folder.name}"
    private = f"{http_server.url}/private/{folder.name}"
    return {
        "good": f"{base}/good.csv",
        "bad": f"{base}/bad.csv",
        "parquet": f"{base}/good.parquet",
        "private": f"{private}/good.csv",
        "missing": f"{base}/missing.csv",
    }


def test_http_registration_check_and_listing(
    admin: Admin, http_server: HttpServer, served: dict[str, str], metadata_file: Path, tmp_path: Path
) -> None:
    secrets = secrets_file(tmp_path, token=http_server.token)
    output = admin(
        "--secrets", secrets, "datasets", "add", "P", "--metadata", metadata_file, "--url", served["good"]
    ).output
    assert f"Registered dataset 'P' (version 1): data at {served['good']} (checked: 6 rows" in output
    assert admin.store.dataset("P").access == {
        "kind": "http",
        "url": served["good"],
        "credentials": None,
        "format": "csv",
        "serve": "memory",
    }
    result = admin(
        "--secrets", secrets, "datasets", "add", "S", "--metadata", metadata_file,
        "--url", served["parquet"], "--serve", "scan",
    )  # fmt: skip
    assert "checked: 6 rows" in result.output
    result = admin(
        "--secrets", secrets, "datasets", "add", "T", "--metadata", metadata_file,
        "--url", served["private"], "--credentials", "portal",
    )  # fmt: skip
    assert "checked: 6 rows" in result.output and http_server.token not in result.output
    assert http_server.requests[-1][1]["authorization"] == f"Bearer {http_server.token}"

    listing = admin("datasets", "list").output
    row(listing, "P", "1", "6", "7", "http", served["good"])
    row(listing, "T", "1", "6", "7", "http", served["private"])
    shown = admin("datasets", "show", "T").output
    row(shown, "data", served["private"])
    row(shown, "access.credentials", "portal")
    assert http_server.token not in shown
    assert "T: OK" in admin("--secrets", secrets, "datasets", "check", "T").output


def test_http_failures_say_what_to_fix(
    admin: Admin,
    http_server: HttpServer,
    served: dict[str, str],
    metadata_file: Path,
    tmp_path: Path,
    closed_port: int,
) -> None:
    secrets = secrets_file(tmp_path, token="wrong-token-never-printed")
    add = ("--secrets", secrets, "datasets", "add", "P", "--metadata", metadata_file)
    message = refused(admin, *add, "--url", served["bad"])
    assert f"the data at {served['bad']} does not match the metadata" in message
    for problem in BAD_PROBLEMS:
        assert problem in message
    assert "lomas-admin-check" not in message  # the temporary copy is never named

    message = refused(admin, *add, "--url", served["missing"])
    assert f"Cannot download {served['missing']}: not found (HTTP 404). Check the url." in message
    message = refused(admin, *add, "--url", served["private"])
    assert "the server requires credentials (HTTP 401)" in message
    message = refused(admin, *add, "--url", served["private"], "--credentials", "portal")
    assert "the server refused the credentials 'portal' (HTTP 403)" in message
    assert "wrong-token-never-printed" not in message
    message = refused(admin, *add, "--url", served["private"], "--credentials", "nobody")
    assert "No HTTP credentials named 'nobody' in the server secrets: add http.nobody.headers" in message
    unreachable = f"http://127.0.0.1:{closed_port}/penguins.csv"
    message = refused(admin, *add, "--url", unreachable)
    assert f"Cannot download {unreachable}: cannot reach host 127.0.0.1:{closed_port}" in message
    assert "skip this check with --no-check if the data is only readable where the server runs" in message


# -- S3 -------------------------------------------------------------------------------------------
@pytest.fixture()
def bucket(s3_server: str) -> str:
    """A bucket of good and bad penguins and their metadata on the moto server; returns its endpoint URL."""
    from s3_fixture import s3_admin

    client = s3_admin(s3_server)
    if BUCKET not in [found["Name"] for found in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="good.csv", Body=GOOD.to_csv(index=False).encode())
    client.put_object(Bucket=BUCKET, Key="bad.csv", Body=BAD.to_csv(index=False).encode())
    client.put_object(Bucket=BUCKET, Key="meta/penguins.yaml", Body=yaml.safe_dump(METADATA).encode())
    client.put_object(Bucket=BUCKET, Key="meta/broken.yaml", Body=b"rows: [1, 2\n")
    return s3_server


def test_s3_registration_with_named_credentials(
    admin: Admin, bucket: str, metadata_file: Path, tmp_path: Path
) -> None:
    secrets = secrets_file(tmp_path)
    result = admin(
        "--secrets", secrets, "datasets", "add", "P", "--metadata", metadata_file,
        "--s3", f"s3://{BUCKET}/good.csv", "--endpoint-url", bucket, "--credentials", "minio",
        "--region", "eu-west-1",
    )  # fmt: skip
    assert f"data at s3://{BUCKET}/good.csv at {bucket} (checked: 6 rows match the metadata)" in result.output
    no_secret_in(result.output)
    assert admin.store.dataset("P").access == {
        "kind": "s3",
        "endpoint_url": bucket,
        "bucket": BUCKET,
        "key": "good.csv",
        "region": "eu-west-1",
        "credentials": "minio",
        "format": "csv",
        "serve": "memory",
    }
    row(admin("datasets", "list").output, "P", "s3", f"s3://{BUCKET}/good.csv at {bucket}")
    shown = admin("datasets", "show", "P").output
    row(shown, "access.credentials", "minio")
    no_secret_in(shown)
    # The same secrets, found through the server's settings file (its secrets_file) instead of --secrets.
    config = write_yaml(tmp_path / "lomas.yaml", {"secrets_file": str(secrets)})
    assert "P: OK" in admin("--config", config, "datasets", "check").output


def test_s3_failures_say_what_to_fix(
    admin: Admin, bucket: str, metadata_file: Path, tmp_path: Path, closed_port: int
) -> None:
    secrets = secrets_file(tmp_path)
    add = (
        "--secrets",
        secrets,
        "datasets",
        "add",
        "P",
        "--metadata",
        metadata_file,
        "--endpoint-url",
        bucket,
    )
    message = refused(admin, *add, "--s3", f"s3://{BUCKET}/good.csv", "--credentials", "nobody")
    assert (
        "Refusing to register 'P': No S3 credentials named 'nobody' in the server secrets: add s3.nobody "
        "(access_key_id, secret_access_key) to the secrets file" in message
    )
    message = refused(admin, *add, "--s3", "s3://no-such-bucket/good.csv", "--credentials", "minio")
    assert "Cannot download s3://no-such-bucket/good.csv" in message
    assert "the bucket 'no-such-bucket' does not exist (NoSuchBucket)." in message
    message = refused(admin, *add, "--s3", f"s3://{BUCKET}/nothing.csv", "--credentials", "minio")
    assert f"no object 'nothing.csv' in the bucket '{BUCKET}' (NoSuchKey)." in message
    message = refused(admin, *add, "--s3", f"s3://{BUCKET}/bad.csv", "--credentials", "minio")
    assert f"the data at s3://{BUCKET}/bad.csv at {bucket} does not match the metadata" in message
    for problem in BAD_PROBLEMS:
        assert problem in message
    unreachable = f"http://127.0.0.1:{closed_port}"
    message = refused(
        admin, "--secrets", secrets, "datasets", "add", "P", "--metadata", metadata_file,
        "--s3", f"s3://{BUCKET}/good.csv", "--endpoint-url", unreachable, "--credentials", "minio",
    )  # fmt: skip
    assert f"cannot reach the S3 endpoint {unreachable} (EndpointConnectionError)" in message

    broken = write_yaml(tmp_path / "broken-secrets.yaml", {"s3": {"minio": {"access_key_id": S3_KEY_ID}}})
    message = refused(admin, "--secrets", broken, *add[2:], "--s3", f"s3://{BUCKET}/good.csv")
    assert (
        f"Error: Cannot read the server secrets: Invalid server secrets in the secrets file {broken}"
        in message
    )
    assert "s3.minio.secret_access_key: Field required" in message
    message = refused(admin, "--secrets", tmp_path / "none.yaml", *add[2:], "--s3", f"s3://{BUCKET}/good.csv")
    assert f"Cannot read the server secrets: Secrets file not found: {tmp_path / 'none.yaml'}" in message


def s3_collection(folder: Path, endpoint: str, **overrides: Any) -> Path:
    s3 = {"database_type": "S3_DB", "endpoint_url": endpoint, "bucket": BUCKET, "credentials_name": "minio"}
    entry = {
        "dataset_name": "PENGUINS",
        "dataset_access": s3 | {"key": "good.csv"},
        "metadata_access": s3 | {"key": "meta/penguins.yaml"},
    }
    return write_yaml(folder / "dataset_collection.yaml", {"datasets": [entry | overrides]})


def test_import_s3_db_data_and_metadata(admin: Admin, bucket: str, tmp_path: Path) -> None:
    secrets = secrets_file(tmp_path)
    collection = s3_collection(tmp_path, bucket)
    output = admin("--secrets", secrets, "import", "datasets", collection).output
    assert f"dataset 'PENGUINS': registered (s3://{BUCKET}/good.csv at {bucket})" in output
    record = admin.store.dataset("PENGUINS")
    assert record.access["credentials"] == "minio" and record.metadata.rows == 6
    assert "Nothing to change" in admin("--secrets", secrets, "import", "datasets", collection).output
    assert admin.store.dataset("PENGUINS").version == 1

    exported = tmp_path / "export" / "dataset_collection.yaml"
    admin("export", "datasets", exported)
    written = yaml.safe_load(exported.read_text())["datasets"][0]["dataset_access"]
    assert written == {
        "database_type": "S3_DB",
        "endpoint_url": bucket,
        "bucket": BUCKET,
        "key": "good.csv",
        "credentials_name": "minio",
    }
    assert "Nothing to change" in admin("--secrets", secrets, "import", "datasets", exported).output


def test_import_s3_db_problems_at_their_location(admin: Admin, bucket: str, tmp_path: Path) -> None:
    secrets = secrets_file(tmp_path)
    s3 = {"database_type": "S3_DB", "endpoint_url": bucket, "bucket": BUCKET}
    inline = s3_collection(
        tmp_path,
        bucket,
        dataset_access=s3 | {"key": "good.csv", "access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET},
    )
    message = refused(admin, "--secrets", secrets, "import", "datasets", inline)
    for key in ("access_key_id", "secret_access_key"):
        assert (
            f"- datasets[0].dataset_access.{key}: S3 keys cannot be stored with a dataset: put them in the "
            "server secrets file under s3.<name>" in message
        )
    assert "has 2 problem(s)" in message

    cases = [
        (
            "metadata_access",
            s3 | {"key": "meta/absent.yaml", "credentials_name": "minio"},
            (
                f"- datasets[0].metadata_access: Cannot download s3://{BUCKET}/meta/absent.yaml at {bucket}: no "
                f"object 'meta/absent.yaml' in the bucket '{BUCKET}' (NoSuchKey)."
            ),
        ),
        (
            "metadata_access",
            s3 | {"key": "meta/penguins.yaml", "credentials_name": "no spaces"},
            "- datasets[0].metadata_access: String should match pattern",
        ),
        (
            "dataset_access",
            s3 | {"key": "good.csv", "credentials_name": "nobody"},
            "- datasets[0].dataset_access: No S3 credentials named 'nobody' in the server secrets",
        ),
    ]
    for field, access, expected in cases:
        collection = s3_collection(tmp_path, bucket, **{field: access})
        message = refused(admin, "--secrets", secrets, "import", "datasets", collection)
        assert f"{collection} has 1 problem(s)" in message and expected in message
    broken = s3_collection(
        tmp_path, bucket, metadata_access=s3 | {"key": "meta/broken.yaml", "credentials_name": "minio"}
    )
    message = refused(admin, "--secrets", secrets, "import", "datasets", broken)
    assert f"- datasets[0].metadata_access (s3://{BUCKET}/meta/broken.yaml at {bucket}) -> line 2" in message
    bad = s3_collection(tmp_path, bucket, dataset_access=s3 | {"key": "bad.csv", "credentials_name": "minio"})
    message = refused(admin, "--secrets", secrets, "import", "datasets", bad)
    assert (
        f"- datasets[0].dataset_access: the data at s3://{BUCKET}/bad.csv at {bucket} does not match its "
        "metadata: column 'island': 2 missing values (null)" in message
    )


# -- PostgreSQL -----------------------------------------------------------------------------------
@pytest.fixture()
def warehouse(fresh_pg_url: str) -> str:
    """A database with tables `public.penguins` (good) and `public.bad_penguins`; its URL with a password."""
    with psycopg.connect(fresh_pg_url, autocommit=True) as connection:
        for table, frame in (("penguins", GOOD), ("bad_penguins", BAD)):
            connection.execute(
                f"CREATE TABLE {table} (species TEXT, island TEXT, bill_length_mm DOUBLE PRECISION, "
                "flipper_mm INTEGER, sex TEXT, year BIGINT, seen TIMESTAMP)"
            )
            with connection.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [
                        tuple(None if pd.isna(v) else v for v in values)
                        for values in frame.itertuples(index=False)
                    ],
                )
    return fresh_pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{PG_PASSWORD}@")


@pytest.mark.postgres
def test_postgresql_registration_and_check(
    admin: Admin, warehouse: str, metadata_file: Path, tmp_path: Path
) -> None:
    secrets = secrets_file(tmp_path, pg_url=warehouse)
    add = ("--secrets", secrets, "datasets", "add", "P", "--metadata", metadata_file)
    output = admin(*add, "--postgresql", "public.penguins", "--connection", "warehouse").output
    assert (
        "data at postgresql table public.penguins (connection 'warehouse') (checked: 6 rows match the "
        "metadata)" in output
    )
    assert admin.store.dataset("P").access == {
        "kind": "postgresql",
        "connection": "warehouse",
        "table": "public.penguins",
    }
    row(admin("datasets", "list").output, "P", "postgresql", "postgresql table public.penguins")
    assert "P: OK" in admin("--secrets", secrets, "datasets", "check").output

    add = ("--secrets", secrets, "datasets", "add", "Q", "--metadata", metadata_file)
    message = refused(admin, *add, "--postgresql", "bad_penguins", "--connection", "warehouse")
    assert "the data at postgresql table bad_penguins (connection 'warehouse') does not match" in message
    for problem in BAD_PROBLEMS:
        assert problem in message
    message = refused(admin, *add, "--postgresql", "penguins", "--connection", "nobody")
    assert (
        "No PostgreSQL connection named 'nobody' in the server secrets: add postgresql.nobody.url" in message
    )
    message = refused(admin, *add, "--postgresql", "no_such_table", "--connection", "warehouse")
    assert "Cannot read postgresql table no_such_table (connection 'warehouse'):" in message
    assert 'relation "no_such_table" does not exist' in message

    with psycopg.connect(warehouse, autocommit=True) as connection:
        connection.execute("ALTER TABLE penguins DROP COLUMN island")
    result = admin("--secrets", secrets, "datasets", "check", "P", code=2)
    assert (
        "P: cannot be read: postgresql table public.penguins (connection 'warehouse') does not match its "
        "metadata: columns missing from the data: island." in result.stdout
    )


@pytest.mark.postgres
def test_postgresql_unreachable_never_prints_the_url(
    admin: Admin, metadata_file: Path, tmp_path: Path, closed_port: int
) -> None:
    url = f"postgresql://reader:{PG_PASSWORD}@127.0.0.1:{closed_port}/stats"
    secrets = secrets_file(tmp_path, pg_url=url)
    message = refused(
        admin, "--secrets", secrets, "datasets", "add", "P", "--metadata", metadata_file,
        "--postgresql", "penguins", "--connection", "warehouse",
    )  # fmt: skip
    assert "Cannot connect to postgresql table penguins (connection 'warehouse'):" in message
    assert url not in message


# -- export and import of every kind --------------------------------------------------------------
def test_export_writes_0_4_forms_when_they_say_everything_and_lomas_forms_otherwise(
    admin: Admin, metadata_file: Path, tmp_path: Path
) -> None:
    accesses = {
        "LOCAL": ("--path", str(tmp_path / "a.csv")),
        "SCAN": ("--path", str(tmp_path / "a.parquet"), "--serve", "scan"),
        "WEB": ("--url", "https://example.org/a.csv", "--credentials", "portal"),
        "S3": ("--s3", "s3://b/k.csv", "--endpoint-url", "https://s3.example.org", "--credentials", "minio"),
        "AWS": ("--s3", "s3://b/k.parquet", "--region", "eu-west-1"),
        "PG": ("--postgresql", "public.penguins", "--connection", "warehouse"),
    }
    for name, options in accesses.items():
        admin("datasets", "add", name, "--metadata", metadata_file, *options, "--no-check")
    exported = tmp_path / "export" / "dataset_collection.yaml"
    admin("export", "datasets", exported)
    written = {
        entry["dataset_name"]: entry["dataset_access"]
        for entry in yaml.safe_load(exported.read_text())["datasets"]
    }
    assert written["LOCAL"] == {"database_type": "PATH_DB", "path": str(tmp_path / "a.csv")}
    assert written["S3"] == {
        "database_type": "S3_DB",
        "endpoint_url": "https://s3.example.org",
        "bucket": "b",
        "key": "k.csv",
        "credentials_name": "minio",
    }
    assert written["SCAN"]["kind"] == "local" and written["SCAN"]["serve"] == "scan"
    assert written["WEB"] == {
        "kind": "http",
        "url": "https://example.org/a.csv",
        "credentials": "portal",
        "format": "csv",
        "serve": "memory",
    }
    assert written["AWS"]["kind"] == "s3" and written["AWS"]["region"] == "eu-west-1"
    assert written["PG"] == {"kind": "postgresql", "connection": "warehouse", "table": "public.penguins"}

    copy = make_admin(tmp_path / "copy")
    copy("import", "datasets", exported, "--no-check")
    assert copy.state() == admin.state()
    assert "Nothing to change" in copy("import", "datasets", exported, "--no-check").output
    copy.engine.dispose()

    document = yaml.safe_load(exported.read_text())
    document["datasets"][0]["dataset_access"] = {"kind": "postgresql", "table": "x y"}
    message = refused(copy, "import", "datasets", write_yaml(exported, document), "--no-check")
    assert "- datasets[0].dataset_access.connection: Field required" in message
    assert "- datasets[0].dataset_access.table: table must be `name` or `schema.name`" in message


def test_list_show_and_check_of_a_foreign_access_never_print_its_secrets(admin: Admin) -> None:
    """Access documents written by other tools may hold keys or a URL password; Lomas never prints them."""
    admin.store.register_dataset(
        "OLD",
        {"database_type": "S3_DB", "endpoint_url": "https://u:hunter2@s3.example.org", "bucket": "b",
         "key": "k.csv", "access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET},
        METADATA,
    )  # fmt: skip
    listing = admin("datasets", "list").output
    row(listing, "OLD", "?", "Invalid data location in the store: S3 keys cannot be stored with a dataset")
    shown = admin("datasets", "show", "OLD").output
    row(shown, "access.access_key_id", "***")
    row(shown, "access.endpoint_url", "https://u:***@s3.example.org")
    result = admin("datasets", "check", code=2)
    assert (
        "OLD: cannot be read: Invalid data location in the store: S3 keys cannot be stored" in result.stdout
    )
    for output in (listing, shown, result.output):
        no_secret_in(output)
        assert "hunter2" not in output
