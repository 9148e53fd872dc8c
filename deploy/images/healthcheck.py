"""Container healthcheck: exit 0 when the service's /healthz answers 200 on TSDEMO_HEALTH_PORT.

Python's standard library only, so no image needs curl or wget just for this.
"""

import os
import sys
import urllib.request

port = int(os.environ.get("TSDEMO_HEALTH_PORT", "8080"))
if port <= 0:
    sys.exit("TSDEMO_HEALTH_PORT is off; the image's healthcheck needs it on")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except OSError as exc:  # refused, timed out, or a 503 (HTTPError is an OSError)
    sys.exit(f"unhealthy: {exc}")
