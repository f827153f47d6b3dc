"""What `lomas-admin` does with data and files: dataset registration from a metadata YAML and a data
location (local file, HTTP(S) URL, S3 object, PostgreSQL table), data checks, and bulk import and export
of the Lomas 0.4 collection files.

Every file is checked completely before anything is written: the caller gets every problem with its
location (`users[1].datasets_list[0].initial_delta: ...`) or a store that changed as the file says.
Imports are idempotent: a file that is already reflected in the store changes nothing.

Reading data needs the server's secrets and data settings (a `DataContext`); callers pass a factory,
so that commands and files that never read data do not need them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import psycopg
import yaml
from pydantic import BaseModel, ValidationError

from lomas.core.collections import (
    CollectionUser,
    DatabaseType,
    DatasetInfo,
    DatasetOfUser,
    DatasetsCollection,
    LomasAccess,
    PathAccess,
    UserCollection,
    check_name,
)
from lomas.core.collections import (
    S3Access as CollectionS3Access,
)
from lomas.core.metadata import Metadata
from lomas.server.data.access import (
    INLINE_S3_KEYS,
    HttpAccess,
    LocalAccess,
    PostgresAccess,
    S3Access,
    access_document,
    parse_access,
    where,
)
from lomas.server.data.checks import DataReport, check_data
from lomas.server.data.errors import DataUnavailableError
from lomas.server.data.remote import local_copy
from lomas.server.data.sources import DataContext, open_source
from lomas.server.store.service import AdminStore, GrantRecord, StoreError

AnyAccess = LocalAccess | HttpAccess | S3Access | PostgresAccess
ContextFactory = Callable[[], DataContext]

_Model = TypeVar("_Model", bound=BaseModel)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

SPENT_BUDGET_RULE = (
    "Spent budgets belong to the store's ledger (the sum of the archived queries) and cannot be "
    "imported: a total_spent_epsilon/total_spent_delta of 0 leaves the recorded spending as it is, "
    "any other value is refused unless it equals what the store already records."
)


# -- problems and their locations ---------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file, and where (a path into the document, or a line)."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message

    def within(self, prefix: str) -> Problem:
        """The same problem seen from a file that references this one."""
        return Problem(f"{prefix} -> {self.location}" if self.location else prefix, self.message)


class InvalidFileError(StoreError):
    """A file with problems. Nothing was written; `problems` lists them all."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        listing = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{source} has {len(self.problems)} problem(s); nothing was written:\n{listing}")


def _format_location(parts: Iterable[str | int]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


def _location(loc: tuple[str | int, ...], document: Any, error_type: str) -> str:
    """Where a pydantic error is, as a path into the document the user wrote.

    Pydantic puts the tag of a discriminated union into `loc` (`columns.age.int.lower`); following
    the document drops those parts, since the user never wrote them. A trailing part that is not in
    the document is kept only for a missing field, whose name is the point of the message.
    """
    parts: list[str | int] = []
    node = document
    for index, part in enumerate(loc):
        if isinstance(node, dict) and part in node:  # noqa: SIM114 - mypy narrows each branch on its own
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif not (index == len(loc) - 1 and error_type == "missing"):
            continue
        parts.append(part)
    return _format_location(parts)


def validation_problems(error: ValidationError, document: Any) -> list[Problem]:
    return [
        Problem(
            _location(tuple(item["loc"]), document, item["type"]), item["msg"].removeprefix("Value error, ")
        )
        for item in error.errors(include_url=False)
    ]


def read_yaml(path: Path, source: str | None = None) -> Any:
    """The document in a YAML file (InvalidFileError, named `source` or the path, when it cannot be read
    or parsed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise InvalidFileError(source or str(path), [Problem("", f"cannot read it: {reason}")]) from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(error, "problem", None) or str(error)
        raise InvalidFileError(source or str(path), [Problem(at, f"not valid YAML: {reason}")]) from error


def validated(model: type[_Model], document: Any, source: str) -> _Model:
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise InvalidFileError(source, validation_problems(error, document)) from error


def _checked_name(name: str, what: str) -> str:
    try:
        return check_name(name)
    except ValueError as error:
        raise StoreError(f"Invalid {what} {name!r}: {error}.") from error


def check_user_name(name: str) -> str:
    return _checked_name(name, "user name")


# -- datasets: metadata, data locations and checks ----------------------------------------------
def load_metadata(path: Path, source: str | None = None) -> Metadata:
    """A metadata YAML file, validated (InvalidFileError names every offending field)."""
    return validated(Metadata, read_yaml(path, source), f"Metadata file {source or path}")


def local_path(path: str | Path, base: Path | None = None) -> str:
    """An absolute path (relative ones against `base`, default the working folder), so that the stored
    dataset does not depend on the folder the administrator ran the command in."""
    candidate = Path(path).expanduser()
    if base is not None and not candidate.is_absolute():
        candidate = base / candidate
    return os.path.abspath(candidate)


def check_dataset(access: AnyAccess, metadata: Metadata, context: DataContext) -> DataReport:
    """Open the data as the server would and run the checks of `lomas.server.data.checks` on it.

    HTTP and S3 files are downloaded to a temporary folder, deleted afterwards: a check neither fills
    nor reads the server's download folder. Raises DataUnavailableError when the data cannot be read,
    lacks a metadata column or has a column that cannot be cast to its metadata type.
    """
    with tempfile.TemporaryDirectory(prefix="lomas-admin-check-") as folder:
        context = dataclasses.replace(context, download_dir=Path(folder), serve_declared_only=False)
        try:
            source = open_source("check", access, metadata, context)  # not the name: it may hold "../"
        except DataUnavailableError as error:
            # A downloaded file is named by its temporary copy; the administrator knows it by its URL.
            message = re.sub(re.escape(folder) + r"\S*?(?=:|\s|$)", where(access), str(error))
            raise type(error)(message) from None
        try:
            return check_data(source, metadata)
        except (duckdb.Error, psycopg.Error) as error:  # the data vanished or the database failed meanwhile
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise DataUnavailableError(f"Cannot check {where(access)}: {first_line}") from None
        finally:
            source.close()


class DataMismatchError(StoreError):
    """The data contradicts its metadata; `problems` says how (each one is a fix to make)."""

    def __init__(self, message: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        listing = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{message}\n{listing}")


NO_CHECK_HINT = "skip this check with --no-check if the data is only readable where the server runs"


def add_dataset(
    store: AdminStore,
    name: str,
    metadata_path: Path,
    access: AnyAccess,
    context: ContextFactory | None,
    replace: bool = False,
) -> tuple[int, DataReport | None]:
    """Register (or with `replace` re-register) a dataset; returns its version and the check's report.

    With a `context`, the data is opened with the metadata's types and checked first; data that cannot
    be read or does not match is refused (nothing is written). Without one, nothing is read.
    """
    _checked_name(name, "dataset name")
    metadata = load_metadata(metadata_path)
    if not replace and name in store.list_datasets():  # before a check that may download a large file
        raise StoreError(f"Dataset {name!r} already exists (re-register it with --replace).")
    report = None
    if context is not None:
        try:
            report = check_dataset(access, metadata, context())
        except DataUnavailableError as error:
            reason = str(error) if str(error).endswith(".") else f"{error}."
            raise StoreError(
                f"Refusing to register {name!r}: {reason} Nothing was written ({NO_CHECK_HINT})."
            ) from None
        if report.problems:
            raise DataMismatchError(
                f"Refusing to register {name!r}: the data at {where(access)} does not match the metadata "
                f"{metadata_path}; fix the data or the metadata (nothing was written):",
                report.problems,
            )
    version = store.register_dataset(
        name, access_document(access), _metadata_document(metadata), replace=replace
    )
    return version, report


def stored_access(document: dict[str, Any]) -> AnyAccess:
    """The access of a registered dataset (StoreError if the store holds a document Lomas cannot read)."""
    try:
        return parse_access(document)
    except ValidationError as error:
        problems = "; ".join(str(problem) for problem in validation_problems(error, document))
        raise StoreError(f"Invalid data location in the store: {problems}") from None


def _metadata_document(metadata: Metadata) -> dict[str, Any]:
    """What the admin wrote (unset defaults stay unset, so a later default change applies to them)."""
    return metadata.model_dump(mode="json", exclude_unset=True)


# -- import: users ------------------------------------------------------------------------------
def import_users(store: AdminStore, path: Path) -> list[str]:
    """Create or update the users and grants of a 0.4 `user_collection.yaml`; returns the changes.

    Users and grants not in the file are left as they are. A grant in the file on a revoked grant
    gives access back (with its spending intact). See SPENT_BUDGET_RULE for spent budgets.
    """
    collection = validated(UserCollection, read_yaml(path), str(path))
    grants = {(grant.user_name, grant.dataset_name): grant for grant in store.grants()}
    problems = _user_problems(collection, set(store.list_datasets()), grants)
    if problems:
        raise InvalidFileError(str(path), problems)
    return [change for user in collection.users for change in _apply_user(store, user, grants)]


def _user_problems(
    collection: UserCollection, datasets: set[str], grants: dict[tuple[str, str], GrantRecord]
) -> list[Problem]:
    problems: list[Problem] = []
    for i, user in enumerate(collection.users):
        for j, item in enumerate(user.datasets_list):
            where = f"users[{i}].datasets_list[{j}]"
            if item.dataset_name not in datasets:
                problems.append(
                    Problem(
                        f"{where}.dataset_name",
                        f"no dataset named {item.dataset_name!r} in the store (import the datasets first)",
                    )
                )
            problems.extend(_spent_problems(where, item, grants.get((user.user_name, item.dataset_name))))
    return problems


def _spent_problems(where: str, item: DatasetOfUser, grant: GrantRecord | None) -> list[Problem]:
    recorded = {
        "epsilon": grant.spent_epsilon if grant else 0.0,
        "delta": grant.spent_delta if grant else 0.0,
    }
    claimed = {"epsilon": item.total_spent_epsilon, "delta": item.total_spent_delta}
    return [
        Problem(
            f"{where}.total_spent_{kind}",
            f"the file says {claimed[kind]!r} was spent but the store records {recorded[kind]!r}. "
            "Spending is recorded by the server's ledger and cannot be imported: set it to 0 "
            "(and lower the initial budget if the user already spent some elsewhere).",
        )
        for kind in ("epsilon", "delta")
        if claimed[kind] != 0 and claimed[kind] != recorded[kind]
    ]


def _apply_user(
    store: AdminStore, user: CollectionUser, grants: dict[tuple[str, str], GrantRecord]
) -> list[str]:
    name, changes = user.user_name, []
    if not store.user_exists(name):
        store.add_user(name, may_query=user.may_query)
        changes.append(f"user {name!r}: created (may_query={user.may_query})")
    elif store.may_query(name) != user.may_query:
        store.set_may_query(name, user.may_query)
        changes.append(f"user {name!r}: may_query set to {user.may_query}")
    for item in user.datasets_list:
        change = _apply_grant(store, name, item, grants.get((name, item.dataset_name)))
        if change:
            changes.append(change)
    return changes


def _apply_grant(
    store: AdminStore, user_name: str, item: DatasetOfUser, grant: GrantRecord | None
) -> str | None:
    what = f"grant {user_name!r} on {item.dataset_name!r}"
    budget = f"epsilon={item.initial_epsilon!r}, delta={item.initial_delta!r}"
    if grant is None or grant.revoked:
        store.grant(user_name, item.dataset_name, item.initial_epsilon, item.initial_delta)
        return f"{what}: {'created' if grant is None else 'restored'} ({budget})"
    if (grant.initial_epsilon, grant.initial_delta) != (item.initial_epsilon, item.initial_delta):
        store.set_initial_budget(user_name, item.dataset_name, item.initial_epsilon, item.initial_delta)
        return f"{what}: initial budget set to {budget}"
    return None


# -- import: datasets ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _PlannedDataset:
    name: str
    access: AnyAccess
    metadata: Metadata


@dataclass(frozen=True)
class ImportResult:
    """What an import changed, and what the data checks noted without refusing (see `DataReport`)."""

    changes: list[str]
    warnings: list[str]


def import_datasets(
    store: AdminStore, path: Path, context: ContextFactory, check: bool = True
) -> ImportResult:
    """Register or update the datasets of a 0.4 `dataset_collection.yaml`.

    Relative local paths are resolved against the folder of `path`. S3_DB accesses name their keys
    with `credentials_name` (inline keys are refused); an S3 metadata file is downloaded with them. A
    dataset whose access or metadata changed is re-registered (a new version); one that did not is left
    alone. Datasets not in the file are left as they are. `context` is called only if data or an S3
    metadata file must be read.
    """
    document = read_yaml(path)
    problems = _inline_key_problems(document)
    try:
        collection = DatasetsCollection.model_validate(document)
    except ValidationError as error:
        raise InvalidFileError(str(path), problems + validation_problems(error, document)) from error
    planned: list[_PlannedDataset] = []
    warnings: list[str] = []
    for index, entry in enumerate(collection.datasets):
        dataset, entry_problems, entry_warnings = _plan_dataset(
            entry, f"datasets[{index}]", path.parent, context, check
        )
        problems.extend(entry_problems)
        warnings.extend(entry_warnings)
        if dataset is not None:
            planned.append(dataset)
    if problems:
        raise InvalidFileError(str(path), problems)
    return ImportResult(
        [change for dataset in planned if (change := _apply_dataset(store, dataset))], warnings
    )


_INLINE_KEYS = ("access_key_id", "secret_access_key")


def _inline_key_problems(document: Any) -> list[Problem]:
    """Every 0.4 inline S3 key of a raw dataset collection, at its location (read before validation, so
    they are reported even in a file with other mistakes)."""
    entries = document.get("datasets") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return []
    return [
        Problem(f"datasets[{index}].{field}.{key}", INLINE_S3_KEYS)
        for index, entry in enumerate(entries)
        if isinstance(entry, dict)
        for field in ("dataset_access", "metadata_access")
        if isinstance(entry.get(field), dict)
        for key in _INLINE_KEYS
        if entry[field].get(key)
    ]


def _has_inline_keys(access: PathAccess | CollectionS3Access | LomasAccess) -> bool:
    document = access.model_dump(exclude_none=True)  # with the extra fields of a Lomas access
    return any(document.get(key) for key in _INLINE_KEYS)


def _plan_dataset(
    entry: DatasetInfo, at: str, base: Path, context: ContextFactory, check: bool
) -> tuple[_PlannedDataset | None, list[Problem], list[str]]:
    """The dataset an entry describes, read and checked, or what is wrong with it (and the warnings)."""
    access, problems = _collection_access(entry.dataset_access, f"{at}.dataset_access", base)
    metadata, metadata_problems = _collection_metadata(
        entry.metadata_access, f"{at}.metadata_access", base, context
    )
    problems += metadata_problems
    if access is None or metadata is None or problems:
        return None, problems, []
    warnings: list[str] = []
    if check:
        try:
            report = check_dataset(access, metadata, context())
        except DataUnavailableError as error:
            return None, [Problem(f"{at}.dataset_access", str(error))], []
        if report.problems:
            prefix = f"the data at {where(access)} does not match its metadata: "
            return (
                None,
                [Problem(f"{at}.dataset_access", prefix + problem) for problem in report.problems],
                [],
            )
        warnings = [f"dataset {entry.dataset_name!r}: {warning}" for warning in report.warnings]
    return _PlannedDataset(entry.dataset_name, access, metadata), [], warnings


def _collection_access(
    access: PathAccess | CollectionS3Access | LomasAccess, location: str, base: Path
) -> tuple[AnyAccess | None, list[Problem]]:
    """A collection entry's access as a Lomas access; local paths made absolute against `base`.

    An access with inline S3 keys was reported by `_inline_key_problems` and is not read further.
    """
    if _has_inline_keys(access):
        return None, []
    document = access.model_dump(mode="json", exclude_none=True)
    try:
        parsed = parse_access(document)
    except ValidationError as error:
        return None, [_nested(location, problem) for problem in validation_problems(error, document)]
    if isinstance(parsed, LocalAccess):
        parsed = parsed.model_copy(update={"path": local_path(parsed.path, base)})
    return parsed, []


def _collection_metadata(
    access: PathAccess | CollectionS3Access, location: str, base: Path, context: ContextFactory
) -> tuple[Metadata | None, list[Problem]]:
    """The metadata file of an entry: a local file, or an S3 object downloaded with its named keys."""
    if isinstance(access, PathAccess):
        metadata_path = Path(local_path(access.path, base))
        try:
            return load_metadata(metadata_path), []
        except InvalidFileError as error:
            return None, [problem.within(f"{location} ({metadata_path})") for problem in error.problems]
    s3, problems = _collection_access(access, location, base)
    if not isinstance(s3, S3Access):
        return None, problems
    try:
        return _s3_metadata(s3, context()), []
    except DataUnavailableError as error:
        return None, [Problem(location, str(error))]
    except InvalidFileError as error:
        return None, [problem.within(f"{location} ({where(s3)})") for problem in error.problems]


def _s3_metadata(access: S3Access, context: DataContext) -> Metadata:
    """Download a metadata YAML from S3 into a temporary folder (through the server's own downloader,
    with its size and time limits) and validate it."""
    with tempfile.TemporaryDirectory(prefix="lomas-admin-metadata-") as folder:
        path = local_copy(
            access,
            context.secrets,
            Path(folder),
            max_bytes=context.max_download_bytes,
            timeout_s=context.download_timeout_s,
            max_seconds=context.max_download_s,
        )
        return validated(Metadata, read_yaml(path, where(access)), where(access))


def _nested(prefix: str, problem: Problem) -> Problem:
    """A problem of a sub-document, located from the whole file."""
    if not problem.location:
        return Problem(prefix, problem.message)
    separator = "" if problem.location.startswith("[") else "."
    return Problem(f"{prefix}{separator}{problem.location}", problem.message)


def _apply_dataset(store: AdminStore, dataset: _PlannedDataset) -> str | None:
    document = access_document(dataset.access)
    if dataset.name not in store.list_datasets():
        store.register_dataset(dataset.name, document, _metadata_document(dataset.metadata))
        return f"dataset {dataset.name!r}: registered ({where(dataset.access)})"
    current = store.dataset(dataset.name)
    changed = [
        what
        for what, differs in (
            ("access", _comparable_access(current.access) != document),
            ("metadata", current.metadata != dataset.metadata),
        )
        if differs
    ]
    if not changed:
        return None
    version = store.register_dataset(
        dataset.name, document, _metadata_document(dataset.metadata), replace=True
    )
    return f"dataset {dataset.name!r}: {' and '.join(changed)} changed, now version {version}"


def _comparable_access(access: dict[str, Any]) -> Any:
    """Access documents compared by meaning (a 0.4-form or format-less document equals its full form)."""
    try:
        return access_document(parse_access(access))
    except ValidationError:
        return access


# -- export -------------------------------------------------------------------------------------
def export_users(store: AdminStore, path: Path) -> int:
    """Write every user and active grant as a 0.4 `user_collection.yaml`; returns the number of users.

    Revoked grants are left out (the 0.4 format cannot say "revoked"; importing them would restore
    access). Spent budgets are written as the store records them.
    """
    active: dict[str, list[DatasetOfUser]] = defaultdict(list)
    for grant in store.grants():
        if not grant.revoked:
            active[grant.user_name].append(
                DatasetOfUser(
                    dataset_name=grant.dataset_name,
                    initial_epsilon=grant.initial_epsilon,
                    initial_delta=grant.initial_delta,
                    total_spent_epsilon=grant.spent_epsilon,
                    total_spent_delta=grant.spent_delta,
                )
            )
    users = [
        CollectionUser(user_name=name, may_query=store.may_query(name), datasets_list=active[name])
        for name in store.list_users()
    ]
    _write_yaml(path, UserCollection(users=users).model_dump(mode="json"))
    return len(users)


def export_datasets(store: AdminStore, path: Path) -> int:
    """Write every dataset as a 0.4 `dataset_collection.yaml`; returns the number of datasets.

    Each metadata goes to `<dataset>_metadata.yaml` beside `path`, referenced relatively, so the
    folder can be moved as a whole. Metadata is written in full (defaults explicit), so that a reader
    with other defaults (0.4 does not censor GROUP BY keys by default) understands it the same way.
    Accesses are written in their 0.4 form (PATH_DB, S3_DB with credentials_name) when it says
    everything, else in the Lomas form (see `lomas.core.collections`), so importing the file gives
    the same store back.
    """
    entries: list[DatasetInfo] = []
    taken = {path.name}
    for name in store.list_datasets():
        record = store.dataset(name)
        try:
            access = stored_access(record.access)
        except StoreError as error:
            raise StoreError(f"Cannot export dataset {name!r}: {error}") from None
        metadata_file = path.parent / _free_file_name(name, taken)
        _write_yaml(metadata_file, record.metadata.model_dump(mode="json", exclude_none=True))
        entries.append(
            DatasetInfo(
                dataset_name=name,
                dataset_access=export_access(access),
                metadata_access=PathAccess(database_type=DatabaseType.PATH, path=metadata_file.name),
            )
        )
    _write_yaml(path, DatasetsCollection(datasets=entries).model_dump(mode="json", exclude_none=True))
    return len(entries)


def export_access(access: AnyAccess) -> PathAccess | CollectionS3Access | LomasAccess:
    """The 0.4 form of an access if it reads back as the same access, else its Lomas form."""
    full = access_document(access)
    candidate: PathAccess | CollectionS3Access | None = None
    if isinstance(access, LocalAccess):
        inferred = LocalAccess(path=access.path).file_format
        candidate = PathAccess(
            database_type=DatabaseType.PATH,
            path=access.path,
            format=access.file_format if access.file_format != inferred else None,
        )
    elif isinstance(access, S3Access) and access.endpoint_url is not None:
        candidate = CollectionS3Access(
            database_type=DatabaseType.S3,
            endpoint_url=access.endpoint_url,
            bucket=access.bucket,
            key=access.key,
            credentials_name=access.credentials,
        )
    if (
        candidate is not None
        and _comparable_access(candidate.model_dump(mode="json", exclude_none=True)) == full
    ):
        return candidate
    return LomasAccess.model_validate(full)


def _free_file_name(dataset_name: str, taken: set[str]) -> str:
    """`<name>_metadata.yaml`, made file-system safe and distinct from the other files written."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", dataset_name).lstrip(".") or "dataset"
    candidate, counter = f"{stem}_metadata.yaml", 1
    while candidate in taken:
        counter += 1
        candidate = f"{stem}_{counter}_metadata.yaml"
    taken.add(candidate)
    return candidate


def _write_yaml(path: Path, document: Any) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
    except OSError as error:
        raise StoreError(f"Cannot write {path}: {error.strerror or error}") from error
