"""`python -m gateway`: read `MTC_GATEWAY_*` settings from the environment and serve."""

from __future__ import annotations

import uvicorn
from pydantic import ValidationError
from pydantic_settings import SettingsError

from gateway.api_keys import ApiKeysFileError
from gateway.app import create_app
from gateway.json_logging import configure_logging
from gateway.settings import GatewaySettings
from services.jobs.settings import jobs_settings_from_environment


def main() -> None:
    """Validate the settings, set up JSON logging and run the gateway until stopped."""
    try:
        settings = GatewaySettings()
    except (ValidationError, SettingsError) as error:
        # A configuration mistake deserves its message, not a traceback.
        raise SystemExit(f"invalid MTC_GATEWAY_* settings: {error}") from None
    try:
        jobs_settings = jobs_settings_from_environment()
    except (ValidationError, SettingsError) as error:
        raise SystemExit(f"invalid MTC_JOBS_* settings: {error}") from None
    configure_logging(settings.log_level)
    try:
        app = create_app(settings, jobs_settings)
    except ApiKeysFileError as error:
        raise SystemExit(f"invalid MTC_GATEWAY_API_KEYS_FILE: {error}") from None
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Keep the JSON logging set up above instead of uvicorn's own format.
        log_config=None,
        # The gateway writes its own access line per predict request; probes stay quiet.
        access_log=False,
    )


if __name__ == "__main__":
    main()
