"""Private data: where it lives (accesses, secrets, downloads), how it is served (memory, scan,
PostgreSQL sources), the dataset cache, and the types the server holds data in."""
