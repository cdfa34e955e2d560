"""The Cellscape code location: assets, checks, jobs, schedules, sensors and resources.

``defs/`` mirrors the library's rooms: imaging (raw plates), qc (GX suites), store (nuclei,
frames, catalog, DVC pin, splits), hcs (the plate as OME-Zarr), localization (models, atlas) and
segmentation.
"""

import dagster as dg

from .defs import automation, hcs, imaging, qc, segmentation, store
from .defs.deploy import executor_from_env
from .defs.io import HANDLE_IO_MANAGER, HandleIOManager
from .defs.localization import atlas, model
from .defs.resources import CellscapeResource

ROOMS = [imaging, qc, store, hcs, model, atlas, segmentation]

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(ROOMS),
    asset_checks=dg.load_asset_checks_from_modules(ROOMS),
    jobs=[automation.ingest_plate_job, automation.dataset_job, model.train_job, model.ablation_job, atlas.atlas_job,
          segmentation.segmentation_job],
    schedules=[model.retrain_schedule],
    sensors=[automation.new_plate_sensor, automation.automation_sensor],
    resources={"cellscape": CellscapeResource(), HANDLE_IO_MANAGER: HandleIOManager()},
    executor=executor_from_env(),  # CELLSCAPE_EXECUTOR=k8s on the cluster: a pod per step
)
