"""Stands in for a web UI package whose import fails (see test_app.py)."""

raise ImportError("the web UI is broken on purpose")
