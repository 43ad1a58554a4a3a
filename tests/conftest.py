"""Shared pytest configuration: the `long` marker (fuzzing and soak tests with small budgets)
and the `zoo` marker with its `--zoo` option (the full model-zoo matrix)."""


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--zoo",
        action="store_true",
        default=False,
        help="run the full model-zoo matrix (tests marked zoo); without it they are deselected",
    )


def pytest_collection_modifyitems(config, items) -> None:
    if config.getoption("--zoo"):
        return
    matrix = [item for item in items if item.get_closest_marker("zoo")]
    if matrix:
        config.hook.pytest_deselected(items=matrix)
        items[:] = [item for item in items if not item.get_closest_marker("zoo")]


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "zoo: a row of the full model-zoo matrix (tests/test_zoo.py); runs with --zoo, the fast "
        "subset runs always",
    )
    config.addinivalue_line(
        "markers",
        "long: bounded fuzz / soak runs (budgets from GRADVIS_FUZZ_SECONDS, GRADVIS_SOAK_CALLS); "
        "CI runs them with small budgets, benchmarks/soak.py with the full ones",
    )
