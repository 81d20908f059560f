"""Tiny custom iDDS works for the integration tests; the iDDS server imports them by module path."""
