"""Resources: where Cellscape keeps plates, frames and figures."""


import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from ..core.qc.config import PlateQCConfig
from ..core.qc.instruments import load_instrument_registry
from ..core.store.dvc import dataset_md5_or_none
from ..core.store.frame_store import FrameStore
from .config import dagster_config

#: The plate checks' settings as Dagster config (fields of ``PlateQCConfig``).
PlateQCSettings = dagster_config(PlateQCConfig, "PlateQCSettings",
                                 doc="Read limits and per-field image defects of plate checking (see ``PlateQCConfig``).")


class CellscapeResource(dg.ConfigurableResource):
    """Project locations; relative paths resolve against ``root``.

    ``root`` defaults to ``$CELLSCAPE_ROOT`` or the working directory (the project root when
    the UI is started there with ``workspace.yaml``).  ``store_url`` may be a local path, a
    ``file://``/``memory://`` URL or a TensorStore kvstore JSON spec (for cloud storage).
    ``qc`` is shared by the plate checks and the nuclei asset, so the fields a check reports as
    excluded are the fields the nuclei asset leaves out.
    """

    root: str = ""
    plates_dir: str = "data/plates"
    store_url: str = "artifacts/frames"
    artifacts_dir: str = "artifacts"
    instruments: str = ""
    dvc_file: str = "data.dvc"
    qc: PlateQCSettings = Field(  # type: ignore[valid-type]
        default_factory=PlateQCSettings,
        description="Plate checking: metadata/image read limits, image-defect thresholds and per defect kind "
                    "exclude (the field is not ingested), block (the check fails) or warn.")

    def qc_config(self) -> PlateQCConfig:
        """The library's plate-checking config of this resource."""
        return self.qc.to_library()

    def root_path(self) -> Path:
        return Path(self.root or os.environ.get("CELLSCAPE_ROOT", "") or os.getcwd()).resolve()

    def path(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.root_path() / p

    def plates_path(self) -> Path:
        return self.path(self.plates_dir)

    def plate_dir(self, plate_id: str) -> Path:
        return self.plates_path() / plate_id

    def figures_dir(self, *parts: str) -> Path:
        d = self.path(self.artifacts_dir).joinpath("figures", *parts)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def store(self) -> FrameStore:
        url = self.store_url
        if url.lstrip().startswith("{"):
            import json

            return FrameStore(json.loads(url))
        if "://" in url:
            return FrameStore(url)
        return FrameStore(str(self.path(url)))

    def registry(self) -> dict:
        return load_instrument_registry(self.path(self.instruments) if self.instruments else None)

    def dataset_md5(self) -> str | None:
        f = self.path(self.dvc_file)
        return dataset_md5_or_none(f.parent, f.name)
