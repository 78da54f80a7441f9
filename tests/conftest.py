"""Test-suite setup: hypothesis profiles and a quiet import of fastnn.

Profiles (select with HYPOTHESIS_PROFILE=<name>; "ci" is the default):

- "ci": 30 examples per property, derandomised so a CI run is reproducible, no
  deadline (the first call of a Numba kernel compiles it).
- "dev": 10 examples, random, for quick local runs.
- "nojit": 3 examples and no shrinking, for the NUMBA_DISABLE_JIT run where kernels
  are Python loops.
"""

import os
import signal
import warnings

from hypothesis import HealthCheck, Phase, settings

_COMMON = dict(
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("ci", max_examples=30, derandomize=True, **_COMMON)
settings.register_profile("dev", max_examples=10, **_COMMON)
# No shrinking in Python mode: a failure is reported as found, shrinking it through
# pure-Python kernel loops would take minutes.
settings.register_profile(
    "nojit",
    max_examples=3,
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    **_COMMON,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# A suite started in the background by a non-interactive shell (`cmd &`) inherits SIGINT
# ignored, and Python then installs no KeyboardInterrupt handler; the Ctrl-C tests send
# SIGINT to this process and to child processes, which need Python's usual handler.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Importing fastnn from a tree whose Cython extensions are not built emits a
# BuildWarning, which `filterwarnings = error` would turn into a collection error for
# every test module. The Cython tests do not need the warning to fail: asking for
# fastnn.backend("cython") raises ImportError with the build command in that case.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="fastnn's Cython kernels are not built")
    import fastnn  # noqa: F401,E402


# The outcome of every test's call phase, by node id, for the reliability records
# (tests/_reliability_record.py: record_module_once_passed).
import pytest  # noqa: E402

import _reliability_record  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        _reliability_record.OUTCOMES[item.nodeid] = report.outcome
