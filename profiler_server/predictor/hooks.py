"""What the predictor does when a campaign completes: refit that (device class, runtime). The app
wires it into the campaign completion (``create_app``)."""

from __future__ import annotations

import logging

from profiler_server.errors import Conflict
from profiler_server.predictor.service import PredictorService

log = logging.getLogger(__name__)


def on_campaign_complete(service: PredictorService, campaign_id: int, device_class: str, runtime: str) -> int | None:
    """Queue a fit in ``service``'s worker; returns the new predictor id (None: too little data).
    A campaign that measured kernels refits the kernel predictor instead (here, in the hook's thread)."""
    from profiler_server.predictor import kernel_predictor

    db = service.db
    if kernel_predictor.campaign_has_kernels(db, campaign_id):
        try:
            return kernel_predictor.fit_and_store(db, device_class, runtime).id
        except Conflict as exc:
            log.info("kernel campaign %d complete, no fit: %s", campaign_id, exc.message)
            return None
    try:
        row = service.start_fit(device_class, runtime)
    except Conflict as exc:
        log.info("campaign %d complete, no fit: %s", campaign_id, exc.message)
        return None
    log.info("campaign %d complete: fitting predictor %d", campaign_id, row.id)
    return row.id
