"""Jobs and the sensor that ingests a plate when its folder lands under data/plates/."""


import dagster as dg

from .hcs import plate_hcs
from .imaging import new_plates, plate_images, plates_partitions
from .qc import plate_metadata
from .resources import CellscapeResource
from .store import dataset_splits, dataset_version, frame_catalog, nuclei_masks, plate_frames

ingest_plate_job = dg.define_asset_job(
    "ingest_plate_job",
    selection=dg.AssetSelection.assets(plate_images, plate_metadata, nuclei_masks, plate_frames, plate_hcs),
    description="Register, validate, segment and crop one plate into the frame store; export it as OME-Zarr HCS.",
)

dataset_job = dg.define_asset_job(
    "dataset_job",
    selection=dg.AssetSelection.assets(dataset_version, frame_catalog, dataset_splits),
    description="Pin the plates with DVC, rebuild the frame catalog and the splits.",
)


@dg.sensor(
    job=ingest_plate_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def new_plate_sensor(context: dg.SensorEvaluationContext, cellscape: CellscapeResource):
    """Add a partition and request an ingest run for each complete, settled new plate folder."""
    known = set(context.instance.get_dynamic_partitions(plates_partitions.name))
    found = new_plates(cellscape.plates_path(), known)
    if not found:
        return dg.SkipReason(f"no new complete plate under {cellscape.plates_path()}")
    context.log.info(f"new plates: {found}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=p, run_key=f"ingest:{p}") for p in found],
        dynamic_partitions_requests=[plates_partitions.build_add_request(found)],
    )


#: Declarative automation is on by default: ``frame_catalog`` (``AutomationCondition.eager()``)
#: refreshes after any plate's frames change, without a job being launched by hand.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Evaluates the assets' automation conditions (frame_catalog refreshes eagerly).",
)
