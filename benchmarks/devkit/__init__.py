"""What the test suite and the research scripts share, kept out of the installed package: a server running in a
thread (``servers``), the seeded HTTP fuzzer (``fuzz``), tiny random checkpoints (``checkpoints``).
Research scripts run by path find it next to them; pytest finds it through ``pythonpath`` in pyproject.toml."""
