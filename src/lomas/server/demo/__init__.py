"""Demo content: sample datasets with their Lomas metadata, and the users and grants that use them."""
