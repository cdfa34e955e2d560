"""The Cellscape code location: assets, checks, jobs, sensors and resources."""

import dagster as dg

from .defs import automation, dataset, plates
from .defs.resources import CellscapeResource

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([plates, dataset]),
    asset_checks=dg.load_asset_checks_from_modules([plates, dataset]),
    jobs=[automation.ingest_plate_job, automation.dataset_job],
    sensors=[automation.new_plate_sensor],
    resources={"cellscape": CellscapeResource()},
)
