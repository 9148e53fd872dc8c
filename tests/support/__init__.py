"""Test support: the shared fixtures (registered once, as pytest plugins, by tests/conftest.py) and the
helpers tests share. Not shipped: nothing under tests/ is part of a package or an image."""
