"""Private data access: connectors, cache and the pandas dtypes the server holds data in."""
