"""`python -m lomas.server` is `lomas-server`."""

from lomas.server.cli import main

main()
