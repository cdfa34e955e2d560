"""IO managers: how one asset's output reaches the assets downstream of it.

:class:`HandleIOManager` stores an asset's output as a small JSON document, a *handle*: the
paths of the files the asset wrote and the ids that say where they came from (run id, models
and checkpoint folders, dataset md5, split, cluster count, seed).  The data itself stays in the
asset's own files (parquet, npz, zarr); the handle is what the downstream asset receives as its
argument, so it reads exactly what its parent produced instead of looking for "the latest"
files.  Handles are JSON, never pickle: readable by people and by other tools, and loading one
cannot execute code.

Any group can use it: give an asset ``io_manager_key=HANDLE_IO_MANAGER`` and return a
JSON-serialisable value (a ``dict`` of strings, numbers, lists and dicts).

An input declared ``dg.AssetIn(metadata={"optional": True})`` receives ``None`` when its parent
has never stored a handle (a model that was never trained is left out instead of failing the
run).  An unpartitioned asset that reads every partition of a partitioned parent receives the
handles of the partitions that have one (a plate added but never ingested is not there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
from pydantic import PrivateAttr

from ..core.ml.model_folder import atomic_write_text

HANDLE_IO_MANAGER = "handle_io_manager"


class HandleIOManager(dg.ConfigurableIOManager):
    """Stores asset outputs as JSON handles at ``<base_dir>/<asset key path>[/<partition>].json``.

    ``base_dir`` defaults to ``handles`` under the Dagster instance's storage directory.  A
    partitioned asset stores one file per partition; a downstream asset that reads several
    partitions gets a ``dict`` partition key -> handle, one that reads a single partition of a
    partitioned run gets that handle.
    """

    base_dir: str = ""
    _base: Path | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.base_dir:
            self._base = Path(self.base_dir)
        elif context.instance is not None:
            self._base = Path(context.instance.storage_directory()) / "handles"

    def _root(self) -> Path:
        if self._base is None:
            raise dg.DagsterInvariantViolationError(
                "HandleIOManager has no base_dir and no Dagster instance to store handles under")
        return self._base

    def _path(self, context: dg.InputContext | dg.OutputContext, partition: str | None) -> Path:
        parts = context.asset_key.path if context.has_asset_key else context.get_identifier()
        path = self._root().joinpath(*(quote(p, safe="") for p in parts))
        if partition is not None:
            path = path / quote(partition, safe="")
        return path.with_name(path.name + ".json")

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        where = context.asset_key.to_user_string() if context.has_asset_key else context.name
        try:
            text = json.dumps(obj, indent=2, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise dg.DagsterInvariantViolationError(
                f"{where}: a handle must be plain JSON (dicts, lists, strings, finite numbers): {e}") from e
        path = self._path(context, context.partition_key if context.has_partition_key else None)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text + "\n")
        context.add_output_metadata({"handle": dg.MetadataValue.path(str(path))})

    def _read(self, context: dg.InputContext, partition: str | None) -> Any:
        path = self._path(context, partition)
        if not path.is_file():
            what = context.asset_key.to_user_string() if context.has_asset_key else context.name
            raise dg.DagsterInvariantViolationError(
                f"no stored handle for {what}{'' if partition is None else f' partition {partition}'} at {path}; "
                "materialize it first")
        return json.loads(path.read_text())

    def load_input(self, context: dg.InputContext) -> Any:
        if not (context.has_asset_key and context.has_asset_partitions):
            if (context.definition_metadata or {}).get("optional") and not self._path(context, None).is_file():
                return None
            return self._read(context, None)
        keys = list(context.asset_partition_keys)
        if len(keys) == 1 and context.has_partition_key:
            return self._read(context, keys[0])
        return {k: self._read(context, k) for k in keys if self._path(context, k).is_file()}
