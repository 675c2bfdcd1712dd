"""Prefect flows and the ``camflow`` command.

Defaults for every entry point, set before Prefect is imported: no analytics, ``camflow.*`` logs
sent to the Prefect API, and patience for the ephemeral API server, which starts slowly on a busy
small machine (Prefect's own default is 20 s).
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# camflow's own loggers (camflow.cluster, camflow.train, ...) reach the Prefect API, so their
# warnings show in the dashboard beside the task runs' logs.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "camflow")
