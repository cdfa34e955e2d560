"""The plate as OME-Zarr HCS: raw fields and the nucleus masks ``nuclei_masks`` recorded, in the store's folder.

Lineage as for ``plate_frames``: the asset reads the masks version named by the
``nuclei_masks`` handle (never "the current one") and refuses a plate folder whose content
changed since; its handle names the path, the masks version and the plate's content digest.
Nothing downstream needs it: it is the plate in a form other tools open (napari, ome-zarr-py,
TensorStore) and that ``cellscape ingest`` takes back.
"""

import json
from pathlib import Path

import dagster as dg

from ..core.imaging.plates import read_plate
from ..core.store.hcs import export_hcs
from ..core.store.ingest import plate_digest
from .imaging import PLATE_GROUP, plates_partitions
from .io import HANDLE_IO_MANAGER
from .resources import CellscapeResource

#: Folder, under a local store's root, of the plates' OME-Zarr exports (``<plate>.ome.zarr``).
HCS_FOLDER = "hcs"


def hcs_folder(cellscape: CellscapeResource) -> Path:
    """Where the OME-Zarr plates go: ``<store>/hcs`` for a local store, else ``<artifacts>/hcs``."""
    url = cellscape.store_url.strip()
    if url.startswith("{"):
        spec = json.loads(url)
        root = Path(spec["path"]) if spec.get("driver") == "file" and spec.get("path") else None
    elif url.startswith("file://"):
        root = Path(url[len("file://"):])
    elif "://" in url:
        root = None
    else:
        root = cellscape.path(url)
    return (root if root is not None else cellscape.path(cellscape.artifacts_dir)) / HCS_FOLDER


@dg.asset(
    partitions_def=plates_partitions,
    group_name=PLATE_GROUP,
    kinds={"zarr"},
    io_manager_key=HANDLE_IO_MANAGER,
)
def plate_hcs(context: dg.AssetExecutionContext, nuclei_masks: dict, cellscape: CellscapeResource):
    """The plate's raw fields and its nucleus masks (as labels) as one OME-Zarr HCS plate (NGFF 0.5, zarr v3)."""
    pk = context.partition_key
    qc = cellscape.qc_config()
    plate_dir = cellscape.plate_dir(pk)
    digest = plate_digest(read_plate(plate_dir, qc.metadata_limits(), qc.image_limits()))
    if digest != nuclei_masks["content_sha256"]:
        raise dg.Failure(f"plate {pk} changed on disk since nuclei_masks ran (content {digest[:12]} vs "
                         f"{nuclei_masks['content_sha256'][:12]}); materialize nuclei_masks again")
    out = hcs_folder(cellscape) / f"{pk}.ome.zarr"
    info = export_hcs(plate_dir, out, cellscape.store(), masks_version=nuclei_masks["masks_version"], replace=True)
    if info["content_sha256"] != digest:
        raise dg.Failure(f"plate {pk} changed on disk while it was exported; materialize nuclei_masks again")
    handle = {"plate_id": pk, "path": info["path"], "masks_version": info["masks_version"],
              "content_sha256": digest, "wells": info["wells"], "fields": info["fields"], "run_id": context.run.run_id}
    return dg.MaterializeResult(
        value=handle,
        metadata={
            "path": dg.MetadataValue.path(info["path"]),
            "wells": info["wells"],
            "fields": info["fields"],
            "labelled_fields": info["labelled_fields"],
            "files": info["files"],
            "pixel_size_um": info["pixel_size_um"],
            "masks_version": info["masks_version"],
            "content_sha256": digest,
        },
        data_version=dg.DataVersion(f"{info['masks_version']}:{digest[:16]}"),
    )
