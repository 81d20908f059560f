"""The web app's routes, one module per concern; each exposes ``routes`` (a RouteTableDef)."""
