"""Names in InfluxDB that storage owns beyond the shared contract: retention policies and rollup
measurements, for the dashboards, status and tests to import rather than spell out.
"""

from __future__ import annotations

from servicekit.contract import DEVICE_WINDOW, SITE_WINDOW

ANOMALY = "anomaly"
# Per device and window: newest lat, lon, battery and last_seen_ms (maps and battery panels).
DEVICE_STATUS = "device_status"

RAW_RP = "raw"  # the database's default policy: every measurement processing writes lands here
ROLLUP_1M_RP = "rollup_1m"
ROLLUP_1H_RP = "rollup_1h"

DEVICE_WINDOW_1M = f"{DEVICE_WINDOW}_1m"
DEVICE_WINDOW_1H = f"{DEVICE_WINDOW}_1h"
SITE_WINDOW_1M = f"{SITE_WINDOW}_1m"
SITE_WINDOW_1H = f"{SITE_WINDOW}_1h"

# Continuous queries storage creates are named with this prefix, so init can drop its own stale
# ones without touching anybody else's.
CQ_PREFIX = "tsdemo_"
