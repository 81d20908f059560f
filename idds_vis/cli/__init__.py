"""The ``idds-vis`` command."""
