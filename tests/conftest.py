"""Shared pytest configuration: the `long` marker (fuzzing and soak tests with small budgets)."""


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "long: bounded fuzz / soak runs (budgets from GRADVIS_FUZZ_SECONDS, GRADVIS_SOAK_CALLS); "
        "CI runs them with small budgets, benchmarks/soak.py with the full ones",
    )
