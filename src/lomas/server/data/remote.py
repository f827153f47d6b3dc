"""Download HTTP(S) and S3 files once into the server's disk cache.

A dataset version's file is fetched the first time it is read and then served from
`<directory>/data.<format>`: later reads, and other server processes, never touch the network again.
The download goes to a temporary file in the same directory that is renamed into place only when
complete, so no process ever reads a partial file, and it is deleted on any failure.

Every failure is a DataUnavailableError (MissingSecretError for an unknown credentials name) whose
message names the location and what to fix. Messages never hold a secret value nor the body of an
answer, and S3 error messages are not passed on (some echo the access key id): only their code.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO, Any

import boto3
import botocore
import botocore.exceptions
import httpx
from botocore.config import Config

from lomas.server.data.access import HttpAccess, S3Access, where
from lomas.server.data.errors import DataUnavailableError
from lomas.server.data.secrets import Secrets

CHUNK_BYTES = 1 << 20
MAX_REDIRECTS = 5
_S3_CREDENTIAL_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "403",
}
_S3_REGION_CODES = {
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
    "301",
}


def local_copy(
    access: HttpAccess | S3Access,
    secrets: Secrets,
    directory: Path,
    *,
    max_bytes: int,
    timeout_s: float,
    max_seconds: float | None = None,
) -> Path:
    """The local copy of the file of `access`, in `directory` (one per dataset version); downloaded if absent.

    `timeout_s` bounds each network operation and `max_seconds` the whole download (a host that sends a
    byte now and then would otherwise hold a thread until `max_bytes`). Credentials are resolved before
    anything is created, so an unknown name fails without a trace on disk.
    """
    deadline = time.monotonic() + max_seconds if max_seconds is not None else math.inf
    target = directory / f"data.{access.file_format}"
    if target.is_file():
        return target
    fetch: Callable[[IO[bytes]], None]
    if isinstance(access, HttpAccess):
        headers = secrets.http_headers(access.credentials) if access.credentials else {}
        fetch = partial(
            _download_http, access, headers, max_bytes=max_bytes, timeout_s=timeout_s, deadline=deadline
        )
    else:
        client = _s3_client(access, secrets, timeout_s)
        fetch = partial(_download_s3, access, client, max_bytes=max_bytes, deadline=deadline)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=directory)
    except OSError as error:
        raise DataUnavailableError(
            f"Cannot download {where(access)}: cannot write to the download directory {directory} "
            f"({error.strerror or type(error).__name__})."
        ) from None
    try:
        with os.fdopen(handle, "wb") as out:
            fetch(out)
            out.flush()
            os.fsync(out.fileno())  # the rename must never expose a file whose bytes are not on disk
        os.replace(temporary, target)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise DataUnavailableError(
            f"Cannot download {where(access)}: cannot write to the download directory {directory} "
            f"({error.strerror or type(error).__name__})."
        ) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def _too_large(access: HttpAccess | S3Access, size: str, max_bytes: int) -> DataUnavailableError:
    return DataUnavailableError(
        f"Cannot download {where(access)}: the file is {size} bytes; the limit data.max_download_bytes is "
        f"{max_bytes}. Raise the limit or serve the file from the server's disk (kind: local)."
    )


def _write_limited(
    access: HttpAccess | S3Access, chunks: Any, out: IO[bytes], max_bytes: int, deadline: float
) -> None:
    """Copy `chunks` to `out`, stopping as soon as more than `max_bytes` arrived (lengths can lie) or the
    deadline passed."""
    received = 0
    for chunk in chunks:
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(access, f"more than {max_bytes}", max_bytes)
        if time.monotonic() > deadline:
            raise DataUnavailableError(
                f"Cannot download {where(access)}: the download takes longer than data.max_download_s "
                "allows. Raise the limit or serve the file from the server's disk (kind: local)."
            )
        out.write(chunk)


# --- HTTP -------------------------------------------------------------------------------------------


def _same_site(origin: httpx.URL, target: httpx.URL) -> bool:
    """Whether a redirect may carry the secret headers: same origin, or the same host upgraded to HTTPS."""
    if target.host != origin.host:
        return False
    if target.scheme == origin.scheme:
        return target.port == origin.port
    return (
        origin.scheme == "http"
        and target.scheme == "https"
        and origin.port in (None, 80)
        and (target.port in (None, 443))
    )


def _download_http(
    access: HttpAccess,
    headers: dict[str, str],
    out: IO[bytes],
    *,
    max_bytes: int,
    timeout_s: float,
    deadline: float,
) -> None:
    """GET the URL, following redirects ourselves: the secret headers never leave the original site."""
    location = where(access)
    host = httpx.URL(access.url).netloc.decode("ascii")
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            request = client.build_request("GET", access.url, headers=headers)
            for _hop in range(MAX_REDIRECTS + 1):
                response = client.send(request, stream=True)
                try:
                    if response.is_redirect:
                        request = _redirected(response, headers, access)
                        continue
                    _check_status(access, response)
                    length = response.headers.get("content-length", "")
                    if length.isdigit() and int(length) > max_bytes:
                        raise _too_large(access, length, max_bytes)
                    _write_limited(access, response.iter_bytes(), out, max_bytes, deadline)  # as bytes arrive
                    return
                finally:
                    response.close()
            raise DataUnavailableError(f"Cannot download {location}: more than {MAX_REDIRECTS} redirects.")
    except httpx.TimeoutException:
        raise DataUnavailableError(
            f"Cannot download {location}: cannot reach host {host}: no answer within {timeout_s} s."
        ) from None
    except (httpx.ConnectError, httpx.NetworkError) as error:
        raise DataUnavailableError(
            f"Cannot download {location}: cannot reach host {host} ({_reason(error)}). Check the url and "
            "that the server can reach it."
        ) from None
    except httpx.HTTPError as error:
        raise DataUnavailableError(
            f"Cannot download {location}: the download failed ({type(error).__name__}: {_reason(error)})."
        ) from None


def _redirected(response: httpx.Response, headers: dict[str, str], access: HttpAccess) -> httpx.Request:
    following = response.next_request
    if following is None:
        raise DataUnavailableError(f"Cannot download {where(access)}: a redirect without a Location.")
    if not _same_site(response.request.url, following.url):
        for name in headers:
            following.headers.pop(name, None)
    return following


def _check_status(access: HttpAccess, response: httpx.Response) -> None:
    status = response.status_code
    if status < 300:
        return
    location = where(access)
    if response.url != httpx.URL(access.url):
        location += f" (redirected to {response.url.copy_with(query=None)})"
    if status in (401, 403):
        if access.credentials:
            raise DataUnavailableError(
                f"Cannot download {location}: the server refused the credentials {access.credentials!r} "
                f"(HTTP {status}): check the headers of http.{access.credentials} in the server secrets."
            )
        raise DataUnavailableError(
            f"Cannot download {location}: the server requires credentials (HTTP {status}): define headers "
            "under http.<name> in the server secrets and name them with `credentials` in the access."
        )
    if status in (404, 410):
        raise DataUnavailableError(f"Cannot download {location}: not found (HTTP {status}). Check the url.")
    raise DataUnavailableError(
        f"Cannot download {location}: the server answered HTTP {status} {response.reason_phrase}."
    )


def _reason(error: BaseException) -> str:
    """The first line of a transport error (errno text, TLS failure), short; never a response body, nor a
    protocol error's text, which quotes the request's headers."""
    if isinstance(error, httpx.LocalProtocolError):
        return type(error).__name__
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:200]


# --- S3 ---------------------------------------------------------------------------------------------


def _s3_client(access: S3Access, secrets: Secrets, timeout_s: float) -> Any:
    """A client with the named keys, or unsigned: never the machine's ambient AWS credentials."""
    credentials = secrets.s3_credentials(access.credentials) if access.credentials else None
    region = access.region or (credentials.region if credentials else None) or "us-east-1"
    config = Config(
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"max_attempts": 2},
        ignore_configured_endpoint_urls=True,
        signature_version=botocore.UNSIGNED if credentials is None else None,
    )
    keys: dict[str, str | None] = {}
    if credentials is not None:
        keys = {
            "aws_access_key_id": credentials.access_key_id.get_secret_value(),
            "aws_secret_access_key": credentials.secret_access_key.get_secret_value(),
            "aws_session_token": (
                credentials.session_token.get_secret_value() if credentials.session_token else None
            ),
        }
    try:
        session = boto3.session.Session()
        return session.client(
            "s3", endpoint_url=access.endpoint_url, region_name=region, config=config, **keys
        )
    except (ValueError, botocore.exceptions.BotoCoreError) as error:
        raise DataUnavailableError(
            f"Cannot download {where(access)}: invalid S3 settings ({type(error).__name__}): check "
            "endpoint_url and region."
        ) from None


def _download_s3(access: S3Access, client: Any, out: IO[bytes], *, max_bytes: int, deadline: float) -> None:
    """GET the object; its size is checked on the answer's headers, before any byte of the body is read.

    One GetObject rather than HeadObject + GetObject: a HEAD answer has no body, hence no error code,
    and could not tell a missing bucket from a missing key or a wrong key from a wrong signature.
    """
    try:
        answer = client.get_object(Bucket=access.bucket, Key=access.key)
        body = answer["Body"]
        try:
            size = int(answer.get("ContentLength", 0))
            if size > max_bytes:
                raise _too_large(access, str(size), max_bytes)
            _write_limited(access, body.iter_chunks(CHUNK_BYTES), out, max_bytes, deadline)
        finally:
            body.close()
    except botocore.exceptions.ClientError as error:
        raise _s3_refusal(access, error) from None
    except (
        botocore.exceptions.EndpointConnectionError,
        botocore.exceptions.ConnectTimeoutError,
        botocore.exceptions.ReadTimeoutError,
        botocore.exceptions.ConnectionClosedError,
    ) as error:
        endpoint = access.endpoint_url or "AWS S3"
        raise DataUnavailableError(
            f"Cannot download {where(access)}: cannot reach the S3 endpoint {endpoint} "
            f"({type(error).__name__}). Check endpoint_url and that the server can reach it."
        ) from None
    except botocore.exceptions.BotoCoreError as error:
        raise DataUnavailableError(
            f"Cannot download {where(access)}: the S3 download failed ({type(error).__name__})."
        ) from None


def _s3_refusal(access: S3Access, error: botocore.exceptions.ClientError) -> DataUnavailableError:
    """A message from the error code and HTTP status only: S3's own message may echo the access key id."""
    details = error.response.get("Error", {})
    code = re.sub(r"[^A-Za-z0-9.]", "", str(details.get("Code", "")))[:64] or "unknown"
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    location = f"Cannot download {where(access)}"
    if code == "NoSuchBucket":
        return DataUnavailableError(
            f"{location}: the bucket {access.bucket!r} does not exist (NoSuchBucket)."
        )
    if code in ("NoSuchKey", "404"):
        return DataUnavailableError(
            f"{location}: no object {access.key!r} in the bucket {access.bucket!r} (NoSuchKey)."
        )
    if code in _S3_CREDENTIAL_CODES:
        if access.credentials:
            return DataUnavailableError(
                f"{location}: S3 refused the credentials {access.credentials!r} ({code}): check "
                f"s3.{access.credentials} in the server secrets and that these keys may read the object."
            )
        return DataUnavailableError(
            f"{location}: S3 refused anonymous access ({code}): define keys under s3.<name> in the server "
            "secrets and name them with `credentials` in the access."
        )
    if code in _S3_REGION_CODES:
        return DataUnavailableError(
            f"{location}: the bucket is in another region ({code}): set `region` in the access or in the "
            "server secrets."
        )
    return DataUnavailableError(f"{location}: S3 answered {code} (HTTP {status}).")
