"""`lomas-admin`: administration of a Lomas store from the command line.

Users, datasets, budget grants and query archives, plus bulk import and export of the Lomas 0.4
collection YAML files. It works directly on the admin store the server uses (same URL, same
migrations), so it needs no running server.
"""
