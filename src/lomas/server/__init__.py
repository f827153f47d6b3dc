"""The Lomas server: FastAPI application, admin store, budget ledger, data and DP engines."""
