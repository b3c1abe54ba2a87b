"""Backbone test modules (a package, so their names never clash with tests/test_*.py)."""
