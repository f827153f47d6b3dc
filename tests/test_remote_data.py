"""Server secrets, and downloads of HTTP and S3 files into the disk cache, against real loopback servers.

No mocks: an HTTP file server in a thread (http_fixture) and moto S3 server processes (s3_fixture),
one of them checking signatures and IAM policies, so that wrong keys are refused the way S3 does.
"""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lomas.server.data.access import HttpAccess, S3Access
from lomas.server.data.errors import DataUnavailableError, MissingSecretError
from lomas.server.data.remote import local_copy
from lomas.server.data.secrets import Secrets, load_secrets

if TYPE_CHECKING:
    from http_fixture import HttpServer
    from s3_fixture import MotoServer


CSV = b"species,island,bill_length_mm\nAdelie,Torgersen,39.1\nGentoo,Biscoe,46.1\n"
BUCKET = "lomas-data"
LIMITS: dict[str, Any] = {"max_bytes": 1_000_000, "timeout_s": 5.0}


def parquet_bytes() -> bytes:
    table = pa.table({"species": ["Adelie", "Gentoo"] * 50, "bill_length_mm": [39.1, 46.1] * 50})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def assert_nothing_left(directory: Path) -> None:
    """A failed download leaves neither the file nor a temporary part of it."""
    assert not directory.exists() or list(directory.iterdir()) == []


def fails(call: Any, error: type[Exception] = DataUnavailableError) -> str:
    with pytest.raises(error) as raised:
        call()
    return str(raised.value)


@pytest.fixture(autouse=True)
def no_secrets_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("LOMAS_SECRETS__", "AWS_")) and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name)


# --- secrets ----------------------------------------------------------------------------------------

SECRETS_YAML = """
s3:
  minio: {access_key_id: AKIAFILEKEY, secret_access_key: file-secret-value, region: eu-west-1}
postgresql:
  warehouse: {url: "postgresql://reader:pg-password@db:5432/stats"}
http:
  portal: {headers: {Authorization: "Bearer file-token"}}
"""


def test_secrets_from_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text(SECRETS_YAML)
    secrets = load_secrets(path)
    minio = secrets.s3_credentials("minio")
    assert minio.access_key_id.get_secret_value() == "AKIAFILEKEY"
    assert minio.secret_access_key.get_secret_value() == "file-secret-value"
    assert minio.region == "eu-west-1" and minio.session_token is None
    assert secrets.postgres_url("warehouse") == "postgresql://reader:pg-password@db:5432/stats"
    assert secrets.http_headers("portal") == {"Authorization": "Bearer file-token"}
    assert load_secrets(None) == Secrets()


def test_environment_overrides_the_file_field_by_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text(SECRETS_YAML)
    monkeypatch.setenv("LOMAS_SECRETS__S3__MINIO__SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("LOMAS_SECRETS__S3__BACKUP__ACCESS_KEY_ID", "AKIAENV")
    monkeypatch.setenv("LOMAS_SECRETS__S3__BACKUP__SECRET_ACCESS_KEY", "env-backup-secret")
    monkeypatch.setenv("LOMAS_SECRETS__POSTGRESQL__WAREHOUSE__URL", "postgresql://env@db/stats")
    monkeypatch.setenv("LOMAS_SECRETS__HTTP__API__HEADERS__X_API_KEY", "env-api-key")
    secrets = load_secrets(path)
    minio = secrets.s3_credentials("minio")
    assert minio.secret_access_key.get_secret_value() == "env-secret"
    assert minio.access_key_id.get_secret_value() == "AKIAFILEKEY"  # kept from the file
    assert minio.region == "eu-west-1"
    assert secrets.postgres_url("warehouse") == "postgresql://env@db/stats"
    # Names from the environment are lower case; a lookup as written in an access document still finds them.
    assert set(secrets.s3) == {"minio", "backup"}
    assert secrets.s3_credentials("BACKUP").access_key_id.get_secret_value() == "AKIAENV"
    assert secrets.http_headers("api") == {"x_api_key": "env-api-key"}
    monkeypatch.delenv("LOMAS_SECRETS__S3__MINIO__SECRET_ACCESS_KEY")  # half a secret without the file
    only_env = load_secrets(None)
    assert only_env.s3_credentials("backup").secret_access_key.get_secret_value() == "env-backup-secret"


def test_missing_secret_names_say_where_to_define_them() -> None:
    secrets = Secrets()
    message = fails(lambda: secrets.s3_credentials("minio"), MissingSecretError)
    assert message == (
        "No S3 credentials named 'minio' in the server secrets: add s3.minio (access_key_id, "
        "secret_access_key) to the secrets file (secrets_file setting) or set "
        "LOMAS_SECRETS__S3__MINIO__ACCESS_KEY_ID and LOMAS_SECRETS__S3__MINIO__SECRET_ACCESS_KEY."
    )
    message = fails(lambda: secrets.postgres_url("warehouse"), MissingSecretError)
    assert "No PostgreSQL connection named 'warehouse'" in message
    assert "postgresql.warehouse.url" in message and "LOMAS_SECRETS__POSTGRESQL__WAREHOUSE__URL" in message
    message = fails(lambda: secrets.http_headers("portal"), MissingSecretError)
    assert "No HTTP credentials named 'portal'" in message
    assert (
        "http.portal.headers" in message and "LOMAS_SECRETS__HTTP__PORTAL__HEADERS__<HEADER_NAME>" in message
    )


def test_repr_and_str_hide_the_values(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text(SECRETS_YAML)
    secrets = load_secrets(path)
    for shown in (repr(secrets), str(secrets), secrets.model_dump_json(), str(secrets.model_dump())):
        for value in ("AKIAFILEKEY", "file-secret-value", "pg-password", "file-token"):
            assert value not in shown
    assert "**********" in repr(secrets) and "minio" in repr(secrets)


def test_invalid_secrets_file_names_the_file_and_field_never_the_value(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text("s3:\n  minio: {access_key_id: 98765432, secret_acess_key: typo-secret-value}\n")
    message = fails(lambda: load_secrets(path), ValueError)
    assert str(path) in message
    assert "s3.minio.access_key_id: Input should be a valid string" in message
    assert "s3.minio.secret_access_key: Field required" in message
    assert "s3.minio.secret_acess_key: Extra inputs are not permitted" in message
    assert "98765432" not in message and "typo-secret-value" not in message

    path.write_text("s4: {}\n")
    assert "s4: Extra inputs are not permitted" in fails(lambda: load_secrets(path), ValueError)
    path.write_text("s3: [not, a, mapping]\n")
    assert "s3: Input should be a valid dictionary" in fails(lambda: load_secrets(path), ValueError)
    path.write_text("s3:\n  minio: {access_key_id: 'unclosed-secret\n")
    message = fails(lambda: load_secrets(path), ValueError)
    assert (
        message.startswith(f"The secrets file {path} is not valid YAML at line") and "unclosed" not in message
    )
    path.write_text("- just a list\n")
    assert "must be a mapping" in fails(lambda: load_secrets(path), ValueError)
    assert fails(lambda: load_secrets(tmp_path / "absent.yaml"), ValueError) == (
        f"Secrets file not found: {tmp_path / 'absent.yaml'}"
    )
    assert "Cannot read the secrets file" in fails(lambda: load_secrets(tmp_path), ValueError)


def test_invalid_environment_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOMAS_SECRETS__S3__MINIO__ACCESS_KEY_ID", "AKIAONLYHALF")
    message = fails(lambda: load_secrets(None), ValueError)
    assert (
        "LOMAS_SECRETS__* environment" in message and "s3.minio.secret_access_key: Field required" in message
    )
    assert "AKIAONLYHALF" not in message
    monkeypatch.delenv("LOMAS_SECRETS__S3__MINIO__ACCESS_KEY_ID")
    monkeypatch.setenv("LOMAS_SECRETS__S3", '{"minio": "broken-secret')
    message = fails(lambda: load_secrets(None), ValueError)
    assert 'error parsing value for field "s3"' in message and "broken-secret" not in message


# --- HTTP -------------------------------------------------------------------------------------------


def http_secrets(token: str) -> Secrets:
    return Secrets(http={"portal": {"headers": {"Authorization": f"Bearer {token}"}}})


def test_http_download_csv_and_parquet_then_served_from_disk(http_server: HttpServer, tmp_path: Path) -> None:
    data = parquet_bytes()
    (http_server.root / "ok.csv").write_bytes(CSV)
    (http_server.root / "ok.parquet").write_bytes(data)
    for name, content in (("ok.csv", CSV), ("ok.parquet", data)):
        access = HttpAccess(url=f"{http_server.url}/{name}")
        directory = tmp_path / name
        path = local_copy(access, Secrets(), directory, **LIMITS)
        assert path == directory / f"data.{access.file_format}" and path.read_bytes() == content
        assert [entry.name for entry in directory.iterdir()] == [path.name]
        (http_server.root / name).unlink()
        seen = len(http_server.requests)
        assert local_copy(access, Secrets(), directory, **LIMITS) == path  # no network: the file is gone
        assert len(http_server.requests) == seen


def test_http_not_found(http_server: HttpServer, tmp_path: Path) -> None:
    url = f"{http_server.url}/absent.csv"
    message = fails(lambda: local_copy(HttpAccess(url=url), Secrets(), tmp_path / "d", **LIMITS))
    assert message == f"Cannot download {url}: not found (HTTP 404). Check the url."
    assert_nothing_left(tmp_path / "d")


def test_http_credentials(http_server: HttpServer, tmp_path: Path) -> None:
    (http_server.root / "secret.csv").write_bytes(CSV)
    url = f"{http_server.url}/private/secret.csv"
    access = HttpAccess(url=url, credentials="portal")
    path = local_copy(access, http_secrets(http_server.token), tmp_path / "ok", **LIMITS)
    assert path.read_bytes() == CSV
    assert http_server.requests[-1][1]["authorization"] == f"Bearer {http_server.token}"

    message = fails(lambda: local_copy(access, http_secrets("wrong-token"), tmp_path / "wrong", **LIMITS))
    assert message == (
        f"Cannot download {url}: the server refused the credentials 'portal' (HTTP 403): check the headers "
        "of http.portal in the server secrets."
    )
    assert_nothing_left(tmp_path / "wrong")

    message = fails(lambda: local_copy(HttpAccess(url=url), Secrets(), tmp_path / "none", **LIMITS))
    assert f"Cannot download {url}: the server requires credentials (HTTP 401)" in message
    assert_nothing_left(tmp_path / "none")

    message = fails(lambda: local_copy(access, Secrets(), tmp_path / "unknown", **LIMITS), MissingSecretError)
    assert message.startswith("No HTTP credentials named 'portal' in the server secrets")
    assert not (tmp_path / "unknown").exists()


def test_http_redirects_keep_secret_headers_on_the_same_site_only(
    http_server: HttpServer, tmp_path: Path
) -> None:
    (http_server.root / "moved.csv").write_bytes(CSV)
    secrets = http_secrets(http_server.token)
    same_site = HttpAccess(url=f"{http_server.url}/goto?/goto?/private/moved.csv", credentials="portal")
    assert local_copy(same_site, secrets, tmp_path / "same", **LIMITS).read_bytes() == CSV

    elsewhere = f"http://localhost:{http_server.port}/private/moved.csv"  # another origin, same server
    access = HttpAccess(url=f"{http_server.url}/goto?{elsewhere}", credentials="portal")
    message = fails(lambda: local_copy(access, secrets, tmp_path / "other", **LIMITS))
    assert f"(redirected to {elsewhere}): the server refused the credentials 'portal' (HTTP 401)" in message
    path, headers = http_server.requests[-1]
    assert path == "/private/moved.csv" and "authorization" not in headers
    assert_nothing_left(tmp_path / "other")

    looping = HttpAccess(url=f"{http_server.url}{'/goto?' * 6}/moved.csv")
    message = fails(lambda: local_copy(looping, Secrets(), tmp_path / "loop", **LIMITS))
    assert message.endswith(": more than 5 redirects.")
    assert_nothing_left(tmp_path / "loop")


def test_http_unreachable_host(closed_port: int, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port}/data.csv"
    message = fails(lambda: local_copy(HttpAccess(url=url), Secrets(), tmp_path / "d", **LIMITS))
    assert message.startswith(f"Cannot download {url}: cannot reach host 127.0.0.1:{closed_port} (")
    assert "Check the url and that the server can reach it." in message
    assert_nothing_left(tmp_path / "d")


def test_http_silent_host_times_out(tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts connections (the kernel does) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        host = f"127.0.0.1:{listener.getsockname()[1]}"
        url = f"http://{host}/data.csv"
        access = HttpAccess(url=url)
        message = fails(lambda: local_copy(access, Secrets(), tmp_path / "d", max_bytes=100, timeout_s=0.3))
    assert message == f"Cannot download {url}: cannot reach host {host}: no answer within 0.3 s."
    assert_nothing_left(tmp_path / "d")


def test_http_size_limit(http_server: HttpServer, tmp_path: Path) -> None:
    big = b"x,y\n" + b"1,2\n" * 5000
    (http_server.root / "big.csv").write_bytes(big)
    url = f"{http_server.url}/big.csv"
    message = fails(
        lambda: local_copy(HttpAccess(url=url), Secrets(), tmp_path / "a", max_bytes=1000, timeout_s=5)
    )
    assert message == (
        f"Cannot download {url}: the file is {len(big)} bytes; the limit data.max_download_bytes is 1000. "
        "Raise the limit or serve the file from the server's disk (kind: local)."
    )
    assert_nothing_left(tmp_path / "a")

    chunked = f"{http_server.url}/chunked/big.csv"  # no Content-Length: stopped while streaming
    message = fails(
        lambda: local_copy(HttpAccess(url=chunked), Secrets(), tmp_path / "b", max_bytes=1000, timeout_s=5)
    )
    assert "the file is more than 1000 bytes; the limit data.max_download_bytes is 1000." in message
    assert_nothing_left(tmp_path / "b")
    path = local_copy(HttpAccess(url=chunked), Secrets(), tmp_path / "c", max_bytes=len(big), timeout_s=5)
    assert path.read_bytes() == big


# --- S3 ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(s3_server: str) -> Iterator[Any]:
    from s3_fixture import s3_admin  # after pytest registered the plugin (and rewrote its asserts)

    client = s3_admin(s3_server)
    client.create_bucket(Bucket=BUCKET)
    yield client


def minio_secrets(key_id: str = "AKIAANYKEY", secret: str = "any-secret") -> Secrets:
    return Secrets(s3={"minio": {"access_key_id": key_id, "secret_access_key": secret}})


def test_s3_download_with_keys_and_anonymously(s3: Any, s3_server: str, tmp_path: Path) -> None:
    data = parquet_bytes()
    # moto, like S3, serves anonymous readers only objects whose ACL allows it.
    s3.put_object(Bucket=BUCKET, Key="ok/penguins.csv", Body=CSV, ACL="public-read")
    s3.put_object(Bucket=BUCKET, Key="ok/penguins.parquet", Body=data, ACL="public-read")
    for key, content in (("ok/penguins.csv", CSV), ("ok/penguins.parquet", data)):
        for credentials in ("minio", None):
            access = S3Access(endpoint_url=s3_server, bucket=BUCKET, key=key, credentials=credentials)
            directory = tmp_path / f"{key}-{credentials}"
            path = local_copy(access, minio_secrets(), directory, **LIMITS)
            assert path.read_bytes() == content and path.name == f"data.{access.file_format}"
            assert [entry.name for entry in directory.iterdir()] == [path.name]
    s3.delete_object(Bucket=BUCKET, Key="ok/penguins.csv")
    access = S3Access(endpoint_url=s3_server, bucket=BUCKET, key="ok/penguins.csv", credentials="minio")
    cached = local_copy(access, minio_secrets(), tmp_path / "ok/penguins.csv-minio", **LIMITS)
    assert cached.read_bytes() == CSV  # from disk: the object is gone


def test_s3_missing_bucket_and_key(s3: Any, s3_server: str, tmp_path: Path) -> None:
    access = S3Access(endpoint_url=s3_server, bucket="no-such-bucket", key="a.csv", credentials="minio")
    message = fails(lambda: local_copy(access, minio_secrets(), tmp_path / "a", **LIMITS))
    assert message == (
        f"Cannot download s3://no-such-bucket/a.csv at {s3_server}: the bucket 'no-such-bucket' does not "
        "exist (NoSuchBucket)."
    )
    assert_nothing_left(tmp_path / "a")
    access = S3Access(endpoint_url=s3_server, bucket=BUCKET, key="absent.csv")
    message = fails(lambda: local_copy(access, Secrets(), tmp_path / "b", **LIMITS))
    assert message.endswith(f": no object 'absent.csv' in the bucket '{BUCKET}' (NoSuchKey).")
    assert_nothing_left(tmp_path / "b")


def test_s3_unknown_credentials_name(s3_server: str, tmp_path: Path) -> None:
    access = S3Access(endpoint_url=s3_server, bucket=BUCKET, key="a.csv", credentials="minio")
    message = fails(lambda: local_copy(access, Secrets(), tmp_path / "d", **LIMITS), MissingSecretError)
    assert message.startswith("No S3 credentials named 'minio' in the server secrets: add s3.minio")
    assert not (tmp_path / "d").exists()


def test_s3_unreachable_endpoint(closed_port: int, tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{closed_port}"
    access = S3Access(endpoint_url=endpoint, bucket=BUCKET, key="a.csv", credentials="minio")
    message = fails(lambda: local_copy(access, minio_secrets(), tmp_path / "d", max_bytes=100, timeout_s=1))
    assert message == (
        f"Cannot download s3://{BUCKET}/a.csv at {endpoint}: cannot reach the S3 endpoint {endpoint} "
        "(EndpointConnectionError). Check endpoint_url and that the server can reach it."
    )
    assert_nothing_left(tmp_path / "d")


def test_a_download_that_trickles_is_stopped_at_its_deadline(http_server: HttpServer, tmp_path: Path) -> None:
    (http_server.root / "trickle.csv").write_bytes(b"x,y\n" + b"1,2\n" * 50)  # one byte every 0.1 s
    url = f"{http_server.url}/slow/trickle.csv"
    started = time.monotonic()
    message = fails(
        lambda: local_copy(
            HttpAccess(url=url), Secrets(), tmp_path / "t", max_bytes=10_000, timeout_s=5, max_seconds=0.5
        )
    )
    assert message == (
        f"Cannot download {url}: the download takes longer than data.max_download_s allows. Raise the limit "
        "or serve the file from the server's disk (kind: local)."
    )
    assert time.monotonic() - started < 3  # each byte came well within timeout_s: only the deadline stops it
    assert_nothing_left(tmp_path / "t")


def test_s3_size_limit(s3: Any, s3_server: str, tmp_path: Path) -> None:
    big = b"x,y\n" + b"1,2\n" * 5000
    s3.put_object(Bucket=BUCKET, Key="big.csv", Body=big, ACL="public-read")
    access = S3Access(endpoint_url=s3_server, bucket=BUCKET, key="big.csv")
    message = fails(lambda: local_copy(access, Secrets(), tmp_path / "d", max_bytes=1000, timeout_s=5))
    assert message.endswith(
        f": the file is {len(big)} bytes; the limit data.max_download_bytes is 1000. "
        "Raise the limit or serve the file from the server's disk (kind: local)."
    )
    assert_nothing_left(tmp_path / "d")


@pytest.fixture(scope="module")
def s3_auth(s3_auth_server: MotoServer) -> dict[str, str]:
    """A bucket, an object and a user who may read `BUCKET/*` only; then moto checks every request."""
    url = s3_auth_server.url
    iam = boto3.session.Session().client(
        "iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    iam.create_user(UserName="reader")
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}],
    }
    iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps(policy))
    from s3_fixture import s3_admin

    admin = s3_admin(url)
    for bucket in (BUCKET, "forbidden"):
        admin.create_bucket(Bucket=bucket)
        admin.put_object(Bucket=bucket, Key="penguins.csv", Body=CSV)
    s3_auth_server.require_auth()
    return {"url": url, "key_id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}


def test_s3_credentials_checked_by_a_real_auth(
    s3_auth: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, key_id, secret = s3_auth["url"], s3_auth["key_id"], s3_auth["secret"]
    access = S3Access(endpoint_url=url, bucket=BUCKET, key="penguins.csv", credentials="minio")
    assert local_copy(access, minio_secrets(key_id, secret), tmp_path / "ok", **LIMITS).read_bytes() == CSV

    cases = [
        (access, minio_secrets(key_id, "wrong-secret"), "SignatureDoesNotMatch"),
        (access, minio_secrets("AKIAUNKNOWN0000", secret), "InvalidAccessKeyId"),
        (access.model_copy(update={"bucket": "forbidden"}), minio_secrets(key_id, secret), "AccessDenied"),
    ]
    for number, (case, secrets, code) in enumerate(cases):
        directory = tmp_path / str(number)
        message = fails(lambda: local_copy(case, secrets, directory, **LIMITS))  # noqa: B023 - called at once
        assert message == (
            f"Cannot download s3://{case.bucket}/penguins.csv at {url}: S3 refused the credentials 'minio' "
            f"({code}): check s3.minio in the server secrets and that these keys may read the object."
        )
        assert key_id not in message and secret not in message and "AKIAUNKNOWN" not in message
        assert_nothing_left(directory)

    # Without credentials the request is unsigned, even when the machine has AWS keys in its environment.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    anonymous = access.model_copy(update={"credentials": None})
    message = fails(lambda: local_copy(anonymous, Secrets(), tmp_path / "anonymous", **LIMITS))
    assert message == (
        f"Cannot download s3://{BUCKET}/penguins.csv at {url}: S3 refused anonymous access (403): define "
        "keys under s3.<name> in the server secrets and name them with `credentials` in the access."
    )
    assert_nothing_left(tmp_path / "anonymous")


def test_concurrent_downloads_never_expose_a_partial_file(http_server: HttpServer, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    big = b"x,y\n" + b"1,2\n" * 200_000
    (http_server.root / "shared.csv").write_bytes(big)
    access = HttpAccess(url=f"{http_server.url}/chunked/shared.csv")
    directory = tmp_path / "dataset" / "1"
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: local_copy(access, Secrets(), directory, **LIMITS), range(4)))
    assert set(paths) == {directory / "data.csv"} and paths[0].read_bytes() == big
    assert [entry.name for entry in directory.iterdir()] == ["data.csv"]


def test_download_directory_not_writable(http_server: HttpServer, tmp_path: Path) -> None:
    (http_server.root / "ok.txt").write_bytes(CSV)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be")
    access = HttpAccess(url=f"{http_server.url}/ok.txt")
    message = fails(lambda: local_copy(access, Secrets(), blocker / "1", **LIMITS))
    assert message == (
        f"Cannot download {access.url}: cannot write to the download directory {blocker / '1'} (Not a directory)."
    )
