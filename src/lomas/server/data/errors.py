"""Why a dataset's data cannot be read. Messages name the dataset's location, never a secret or a value."""


class DataUnavailableError(RuntimeError):
    """The data cannot be read right now (moved, unreachable, unreadable, no matching metadata).

    Raised before any private value reached a query, so the query is not charged.
    """


class UnreachableError(DataUnavailableError):
    """The data's server cannot be reached. Raised before anything was sent to it, so even in the middle of
    a query it means that no private value was read."""


class PlanningRefusedError(Exception):
    """The data's server refused a query while planning it, before reading any row (a function or an
    operator it does not have). Not charged: the message depends on the query only."""


class MissingSecretError(DataUnavailableError):
    """An access document names credentials that the server secrets do not define."""
