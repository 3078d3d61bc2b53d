"""Example strategies, not registered: docs/adding-a-strategy.md walks through them, and
tests/test_registry.py registers them for a with-block and checks their contract."""
