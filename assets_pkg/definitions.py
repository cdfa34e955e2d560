"""The Cellscape code location: assets, checks, jobs, schedules, sensors and resources."""

import dagster as dg

from .defs import atlas, automation, dataset, model, plates, segmentation
from .defs.io import HANDLE_IO_MANAGER, HandleIOManager
from .defs.resources import CellscapeResource

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([plates, dataset, model, atlas, segmentation]),
    asset_checks=dg.load_asset_checks_from_modules([plates, dataset, model, atlas, segmentation]),
    jobs=[automation.ingest_plate_job, automation.dataset_job, model.train_job, model.ablation_job, atlas.atlas_job,
          segmentation.segmentation_job],
    schedules=[model.retrain_schedule],
    sensors=[automation.new_plate_sensor],
    resources={"cellscape": CellscapeResource(), HANDLE_IO_MANAGER: HandleIOManager()},
)
