"""The admin store: users, datasets, grants, and the query ledger (which is also the archive)."""
