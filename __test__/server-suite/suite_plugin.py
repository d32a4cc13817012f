"""A pytest plugin for llama.cpp's server test suite as this project runs it.

- The suite's models are swapped for one installed chat model by the launchers, so the session's
  download of every preset (``ServerPreset.load_all``) has nothing to fetch: it is skipped.
- Each test's outcome is written as JSON to ``$SUITE_RESULTS`` (``{nodeid: outcome}``), by the
  controlling process only when pytest-xdist spreads the tests over workers.
"""

import json
import os

import utils

utils.ServerPreset.load_all = staticmethod(lambda: None)

_outcomes = {}


def pytest_runtest_logreport(report):
    if report.outcome == "failed":
        outcome = "failed" if report.when == "call" else "error"
    elif report.when == "call" or report.outcome == "skipped":
        outcome = report.outcome
    else:
        return
    # A failure in any phase stands: a later phase's report does not undo it.
    if _outcomes.get(report.nodeid) in ("failed", "error") and outcome != "failed":
        return
    _outcomes[report.nodeid] = outcome


def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):
        return
    path = os.environ.get("SUITE_RESULTS")
    if path:
        with open(path, "w") as f:
            json.dump(_outcomes, f, indent=1, sort_keys=True)
