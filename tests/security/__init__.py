"""Attacks on idds-vis: one module per class of hostile input (issue 15)."""
