"""What `lomas-admin` does with files: dataset registration from a metadata YAML and a data file, and
bulk import and export of the Lomas 0.4 collection files.

Every file is checked completely before anything is written: the caller gets every problem with its
location (`users[1].datasets_list[0].initial_delta: ...`) or a store that changed as the file says.
Imports are idempotent: a file that is already reflected in the store changes nothing.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from lomas.core.collections import (
    CollectionUser,
    DatabaseType,
    DatasetInfo,
    DatasetOfUser,
    DatasetsCollection,
    PathAccess,
    UserCollection,
    check_name,
)
from lomas.core.metadata import Metadata
from lomas.server.data.connectors import DataUnavailableError, LocalFileAccess, parse_access, read_frame
from lomas.server.store.service import AdminStore, GrantRecord, StoreError

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
        if isinstance(node, dict) and part in node:
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


def read_yaml(path: Path) -> Any:
    """The document in a YAML file (InvalidFileError when it cannot be read or parsed)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidFileError(
            str(path), [Problem("", f"cannot read it: {error.strerror or error}")]
        ) from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(error, "problem", None) or str(error)
        raise InvalidFileError(str(path), [Problem(where, f"not valid YAML: {reason}")]) from error


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


# -- datasets from files ------------------------------------------------------------------------
def load_metadata(path: Path) -> Metadata:
    """A metadata YAML file, validated (InvalidFileError names every offending field)."""
    return validated(Metadata, read_yaml(path), f"Metadata file {path}")


def local_access(data_path: Path, file_format: str | None = None) -> dict[str, Any]:
    """The access document of a local data file: absolute path, format explicit (inferred from the
    file name when not given), so that the stored dataset does not depend on the admin's folder."""
    path = os.path.abspath(os.path.expanduser(data_path))
    access = LocalFileAccess(path=path, format=file_format)  # type: ignore[arg-type]
    return {"kind": "local", "path": path, "format": access.file_format}


def data_problem(access: dict[str, Any], metadata: Metadata) -> str | None:
    """Why the data cannot serve this metadata (unreadable, columns missing, wrong types), if it cannot."""
    try:
        read_frame(parse_access(access), metadata)
    except DataUnavailableError as error:
        return str(error)
    return None


def add_dataset(
    store: AdminStore,
    name: str,
    metadata_path: Path,
    data_path: Path,
    file_format: str | None = None,
    replace: bool = False,
    check: bool = True,
) -> int:
    """Register (or with `replace` re-register) a local dataset; returns its version.

    With `check`, the data is read once with the metadata's types, and a mismatch is refused.
    """
    _checked_name(name, "dataset name")
    metadata = load_metadata(metadata_path)
    access = local_access(data_path, file_format)
    if check and (problem := data_problem(access, metadata)) is not None:
        raise StoreError(
            f"Refusing to register {name!r}: {problem} "
            "(skip this check with --no-check if the data is only readable where the server runs)."
        )
    return store.register_dataset(name, access, _metadata_document(metadata), replace=replace)


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
    access: dict[str, Any]
    metadata: Metadata


def import_datasets(store: AdminStore, path: Path, check: bool = True) -> list[str]:
    """Register or update the datasets of a 0.4 `dataset_collection.yaml`; returns the changes.

    Relative paths are resolved against the folder of `path`. A dataset whose access or metadata
    changed is re-registered (a new version); one that did not is left alone. Datasets not in the
    file are left as they are.
    """
    document = read_yaml(path)
    unsupported = _s3_accesses(document)
    problems = [Problem(f"{where}.database_type", S3_NOT_SUPPORTED) for where in unsupported]
    try:
        collection = DatasetsCollection.model_validate(document)
    except ValidationError as error:
        # The fields an S3 access lacks or has wrong are moot: it cannot be imported anyway.
        problems += [
            problem
            for problem in validation_problems(error, document)
            if not any(_is_under(problem.location, where) for where in unsupported)
        ]
        raise InvalidFileError(str(path), problems) from error
    planned: list[_PlannedDataset] = []
    for index, entry in enumerate(collection.datasets):
        dataset, entry_problems = _plan_dataset(entry, f"datasets[{index}]", path.parent, check)
        problems.extend(entry_problems)
        if dataset is not None:
            planned.append(dataset)
    if problems:
        raise InvalidFileError(str(path), problems)
    return [change for dataset in planned if (change := _apply_dataset(store, dataset))]


S3_NOT_SUPPORTED = "S3_DB is not supported yet: only PATH_DB (a file) can be imported"


def _is_under(location: str, prefix: str) -> bool:
    return location == prefix or location.startswith(f"{prefix}.")


def _s3_accesses(document: Any) -> list[str]:
    """Locations of the S3 access documents in a raw dataset collection (before validation)."""
    entries = document.get("datasets") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return []
    return [
        f"datasets[{index}].{field}"
        for index, entry in enumerate(entries)
        if isinstance(entry, dict)
        for field in ("dataset_access", "metadata_access")
        if isinstance(entry.get(field), dict) and entry[field].get("database_type") == DatabaseType.S3
    ]


def _plan_dataset(
    entry: DatasetInfo, where: str, base: Path, check: bool
) -> tuple[_PlannedDataset | None, list[Problem]]:
    """The dataset an entry describes, read and checked, or what is wrong with it.

    Entries with an S3 access were reported before (see `_s3_accesses`) and are skipped here.
    """
    if not isinstance(entry.dataset_access, PathAccess) or not isinstance(entry.metadata_access, PathAccess):
        return None, []
    metadata_path = _resolve(entry.metadata_access.path, base)
    try:
        metadata = load_metadata(metadata_path)
    except InvalidFileError as error:
        return None, [
            problem.within(f"{where}.metadata_access ({metadata_path})") for problem in error.problems
        ]
    access = local_access(_resolve(entry.dataset_access.path, base), entry.dataset_access.format)
    if check and (problem := data_problem(access, metadata)) is not None:
        return None, [Problem(f"{where}.dataset_access", problem)]
    return _PlannedDataset(entry.dataset_name, access, metadata), []


def _resolve(path: str, base: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def _apply_dataset(store: AdminStore, dataset: _PlannedDataset) -> str | None:
    if dataset.name not in store.list_datasets():
        store.register_dataset(dataset.name, dataset.access, _metadata_document(dataset.metadata))
        return f"dataset {dataset.name!r}: registered"
    current = store.dataset(dataset.name)
    changed = [
        what
        for what, differs in (
            ("access", _comparable_access(current.access) != _comparable_access(dataset.access)),
            ("metadata", current.metadata != dataset.metadata),
        )
        if differs
    ]
    if not changed:
        return None
    version = store.register_dataset(
        dataset.name, dataset.access, _metadata_document(dataset.metadata), replace=True
    )
    return f"dataset {dataset.name!r}: {' and '.join(changed)} changed, now version {version}"


def _comparable_access(access: dict[str, Any]) -> Any:
    """Access documents compared by meaning (a 0.4-form or format-less document equals its full form)."""
    try:
        parsed = parse_access(access)
    except ValidationError:
        return access
    return (parsed.kind, parsed.path, parsed.file_format)


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
    """
    entries: list[DatasetInfo] = []
    taken = {path.name}
    for name in store.list_datasets():
        record = store.dataset(name)
        metadata_file = path.parent / _free_file_name(name, taken)
        _write_yaml(metadata_file, record.metadata.model_dump(mode="json", exclude_none=True))
        entries.append(
            DatasetInfo(
                dataset_name=name,
                dataset_access=_path_access(name, record.access),
                metadata_access=PathAccess(database_type=DatabaseType.PATH, path=metadata_file.name),
            )
        )
    _write_yaml(path, DatasetsCollection(datasets=entries).model_dump(mode="json", exclude_none=True))
    return len(entries)


def _path_access(name: str, access: dict[str, Any]) -> PathAccess:
    try:
        local = parse_access(access)
    except ValidationError as error:
        raise StoreError(
            f"Dataset {name!r} is not a local file ({access.get('kind', access.get('database_type'))}); "
            "the 0.4 collection format can only describe local files."
        ) from error
    inferred = LocalFileAccess(path=local.path).file_format
    explicit = local.file_format if local.file_format != inferred else None
    return PathAccess(database_type=DatabaseType.PATH, path=local.path, format=explicit)  # type: ignore[arg-type]


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
