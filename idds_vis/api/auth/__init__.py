"""Login for the web app: OIDC tokens, sessions, the auth middleware and rate limits."""
