"""The revisions, one per schema version (see the package docstring)."""
