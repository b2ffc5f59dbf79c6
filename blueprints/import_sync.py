"""Timer-triggered deployment sync: re-imports every configured resource on DEPLOYMENT_SYNC_SCHEDULE."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import azure.functions as func

bp = func.Blueprint()
logger = logging.getLogger(__name__)


class SyncFailed(RuntimeError):
    """Raised so the platform records the execution as failed (visible in Application Insights)."""


# The Functions host runs a timer function as a singleton and never starts it while it still runs; the import
# lease in the catalogue also keeps it from overlapping an on-demand import.
@bp.timer_trigger(schedule="%DEPLOYMENT_SYNC_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def sync_deployments(timer: func.TimerRequest) -> None:
    from shared import services
    from shared.importing import import_deployments
    from shared.settings import get_settings

    if timer.past_due:
        logger.warning("deployment sync is running late (a scheduled run was missed)")
    resources = get_settings().resources
    if not resources:
        logger.warning("deployment sync skipped: AZURE_OPENAI_RESOURCES names no resource")
        return
    report = import_deployments(resources, services.arm_client(), services.catalog(), datetime.now(UTC))
    for item in report.resources:
        if item.busy:
            logger.info("deployment sync of %s skipped: another import is running", item.resource)
        elif item.error is not None:
            logger.error("deployment sync of %s failed: ARM %s %s", item.resource, item.error.status, item.error.code)
        else:
            logger.info("deployment sync of %s: %s", item.resource, item.counts.to_dict() if item.counts else {})
    if report.failures:
        raise SyncFailed(f"deployment sync failed for {', '.join(i.resource for i in report.failures)}")
