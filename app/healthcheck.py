"""Exit 0 when the server on `CNN_PORT` answers `/health`, 1 otherwise: the Docker image's
HEALTHCHECK (`python -m app.healthcheck`), so the probe follows the port the server takes."""

import sys
import urllib.request

from app.settings import Settings

HEALTH_URL = "/health"  # the public path (app.routers.health), not imported: the probe stays light
TIMEOUT_S = 4  # under the HEALTHCHECK's --timeout, so a slow answer is reported, not killed
WILDCARDS = {"0.0.0.0", "::", ""}


def main() -> int:
    settings = Settings()
    host = "127.0.0.1" if settings.host in WILDCARDS else settings.host
    if ":" in host:
        host = f"[{host}]"
    try:
        with urllib.request.urlopen(
            f"http://{host}:{settings.port}{HEALTH_URL}", timeout=TIMEOUT_S
        ):
            return 0
    except OSError as exc:  # refused, timed out, or an HTTP error status
        print(f"health check failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
