"""Wire models shared by the client and the server (the Lomas 0.4 protocol)."""
