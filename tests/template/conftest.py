"""Says which EventBridge pattern matcher the routing test ran, at the top and at the bottom of the
pytest output, so a run without event-ruler can't pass unnoticed as if it had it."""

from __future__ import annotations

import matchers


def pytest_report_header(config):
    return matchers.describe()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    terminalreporter.write_sep("-", matchers.describe())
