"""Backends: the ways of making int8 (`interface`), their recipes (`recipes`), found by name (`registry`)."""
