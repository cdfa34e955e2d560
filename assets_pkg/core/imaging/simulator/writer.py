"""Plates of the virtual microscope: panels, acquisition times, metadata and plate folders.

:func:`simulate_plates` lays a protein panel out on plates (one protein per well), plans the
defects, fills the metadata rows and writes each plate through
:func:`assets_pkg.core.imaging.plates.write_plate`, rendering one field at a time
(:func:`~.render.render_field`) so that memory stays bounded.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from .. import plates
from ..plates import WellInfo
from .common import (
    BIT_DEPTH,
    CELL_LINE,
    CHANNELS,
    FIELD_SIZE,
    FIXATION,
    INSTRUMENT,
    NUMERICAL_APERTURE,
    OBJECTIVE,
    OPERATOR,
    PIXEL_SIZE_UM,
    SIMULATOR_NAME,
    SIMULATOR_VERSION,
    SITE,
    STREAM_FIELD,
    STREAM_PANEL,
    STREAM_PLATE,
    STREAM_PROTEIN,
    SUB_DEFECT,
    child_rng,
    child_seq,
)
from .defects import DEFECT_KINDS, DEFECTS_COLUMNS, DefectPlan, plan_defect
from .optics import CAMERA_OFFSET_ADU, GAIN_ADU_PER_E, READ_NOISE_ADU
from .render import SimulatedField, render_field


def parse_start_time(start_time: str) -> datetime:
    """The UTC time of an ISO 8601 timestamp that names its zone (``Z`` or an offset)."""
    try:
        t = datetime.fromisoformat(start_time.replace("Z", "+00:00"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"start_time {start_time!r} is not an ISO 8601 timestamp") from e
    if t.tzinfo is None:
        raise ValueError(f"start_time {start_time!r} has no time zone; end it with 'Z' (UTC)")
    return t.astimezone(UTC)


def acquisition_time(start: datetime, plate_index: int, well_index: int, field_id: int) -> str:
    """ISO 8601 UTC time of a field: plates a day apart, wells 2 min apart, fields 15 s apart."""
    t = start + timedelta(days=plate_index, minutes=2 * well_index, seconds=15 * field_id)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def protein_expression(seed: int, well: WellInfo) -> float:
    """Deterministic expression level (ADU) of a protein: log-normal, median 1500 ADU."""
    key = int(well.ensg_id[4:]) if well.ensg_id[4:].isdigit() else sum(well.ensg_id.encode())
    rng = child_rng(seed, STREAM_PROTEIN, key)
    return float(np.clip(rng.lognormal(math.log(1500.0), 0.55), 300.0, 12000.0))


def _resolve_panel(proteins) -> tuple[list[WellInfo], str]:
    from ..proteins import load_panel

    if proteins is None:
        return load_panel(None), "default_panel.csv"
    if isinstance(proteins, pd.DataFrame):
        return load_panel(proteins), "<DataFrame>"
    if isinstance(proteins, (str, Path)):
        return load_panel(proteins), Path(proteins).name
    panel = list(proteins)
    if not panel or not all(isinstance(w, WellInfo) for w in panel):
        raise TypeError("proteins must be None, a CSV path, a DataFrame or a list of WellInfo")
    return panel, "<list>"


class _LazyImages(Mapping):
    """(well, field_id, channel) -> uint16 image, rendered on first access of a field.

    Keeps one field (both channels) in memory, so a plate of any size is written with
    bounded memory, and advances the progress bar as fields are rendered.
    """

    def __init__(self, keys, render, bar):
        self._keys = list(keys)
        self._set = set(self._keys)
        self._render = render
        self._bar = bar
        self._cached: tuple | None = None
        self._field: SimulatedField | None = None

    def __getitem__(self, key):
        if key not in self._set:
            raise KeyError(key)
        well, fid, ch = key
        if self._cached != (well, fid):
            self._field = self._render(well, fid)
            self._cached = (well, fid)
            if self._bar is not None:
                self._bar.update(1)
        return getattr(self._field, ch)

    def __iter__(self) -> Iterator:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def simulate_plates(
    out_dir,
    n_plates: int,
    seed: int,
    proteins=None,
    wells: int = 8,
    fields_per_well: int = 2,
    field_size: int = FIELD_SIZE,
    defects: bool = False,
    defect_rate: float = 0.1,
    plate_prefix: str = "plate",
    start_time: str = "2026-01-05T09:00:00Z",
    progress: bool = False,
) -> list[Path]:
    """Write synthetic OpenCell-like plate folders.

    Parameters
    ----------
    out_dir : path-like
        Parent folder; plates land in ``out_dir/<plate_prefix><NN>`` (``plate01`` ...).
        None of them may exist yet (checked before anything is rendered).
    n_plates : int
        Number of plates.
    seed : int
        Seeds everything: panel order, layouts, patterns, noise, defects.
    proteins : None, path-like, pandas.DataFrame or list of WellInfo
        The panel: ``None`` for the packaged default, or an OpenCell-format annotation table
        (see :func:`assets_pkg.core.imaging.proteins.load_panel`).
    wells : int
        Wells per plate (``A01`` .. in row-major 384-well order), one protein per well.
        The panel is shuffled once from ``seed``; plate k (0-based) takes panel entries
        ``k * wells .. k * wells + wells - 1`` (modulo the panel size), so enough plates
        cover the whole panel.
    fields_per_well : int
        Fields imaged per well.
    field_size : int
        Side of each square image in pixels (pixel size 0.2 um).
    defects : bool
        Inject acquisition defects and write ``defects.csv``.
    defect_rate : float
        Probability that a field has a defect (one of :data:`DEFECT_KINDS`, equally likely).
    plate_prefix : str
        Plate id prefix.
    start_time : str
        ISO 8601 time with zone of the first field; later fields are offset from it
        deterministically (:func:`acquisition_time`).
    progress : bool
        Show a tqdm progress bar over fields.

    Returns
    -------
    list of Path
        The plate folders, in order.
    """
    if n_plates < 1:
        raise ValueError(f"n_plates must be >= 1, got {n_plates}")
    if fields_per_well < 1:
        raise ValueError(f"fields_per_well must be >= 1, got {fields_per_well}")
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError(f"defect_rate must be in 0..1, got {defect_rate}")
    start = parse_start_time(start_time)
    well_list = plates.well_names(wells)
    panel, panel_source = _resolve_panel(proteins)
    out_dir = Path(out_dir)
    plate_ids = [plates.check_plate_id(f"{plate_prefix}{k + 1:02d}") for k in range(n_plates)]
    for pid in plate_ids:
        if (out_dir / pid).exists():
            raise plates.PlateFormatError(
                "plate folder already exists; refusing to overwrite", path=out_dir / pid
            )

    order = child_rng(seed, STREAM_PANEL).permutation(len(panel))
    from ..proteins import panel_to_frame

    panel_sha = hashlib.sha256(
        panel_to_frame(panel).to_csv(index=False, lineterminator="\n").encode()
    ).hexdigest()

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_plates * wells * fields_per_well, desc="simulating fields", unit="field")

    written: list[Path] = []
    try:
        for k, pid in enumerate(plate_ids):
            prng = child_rng(seed, STREAM_PLATE, k)
            centre = tuple(float(v) for v in prng.normal(0.5, 0.05, 2))
            plate_illum = {ch: (centre, float(prng.uniform(0.15, 0.3))) for ch in CHANNELS}
            plate_wells = {
                w: panel[order[(k * wells + j) % len(panel)]] for j, w in enumerate(well_list)
            }
            levels = {w: protein_expression(seed, info) for w, info in plate_wells.items()}

            plans: dict[tuple[str, int], DefectPlan] = {}
            rows, defect_rows = [], []
            for j, w in enumerate(well_list):
                info = plate_wells[w]
                for f in range(fields_per_well):
                    if defects:
                        drng = child_rng(seed, STREAM_FIELD, k, j, f, SUB_DEFECT)
                        if drng.random() < defect_rate:
                            kind = DEFECT_KINDS[int(drng.integers(len(DEFECT_KINDS)))]
                            plan = plan_defect(
                                kind,
                                child_seq(seed, STREAM_FIELD, k, j, f, SUB_DEFECT, 1),
                                field_size,
                                PIXEL_SIZE_UM,
                            )
                            plans[(w, f)] = plan
                            for ch in plan.channels:
                                defect_rows.append((pid, w, f, ch, plan.kind, plan.detail))
                    t = acquisition_time(start, k, j, f)
                    for ch, c in CHANNELS.items():
                        rows.append(
                            {
                                "well": w,
                                "field_id": f,
                                "channel": ch,
                                "bit_depth": BIT_DEPTH,
                                "gene": info.gene,
                                "ensg_id": info.ensg_id,
                                "cell_line": CELL_LINE,
                                "instrument": INSTRUMENT,
                                "objective": OBJECTIVE,
                                "numerical_aperture": NUMERICAL_APERTURE,
                                "pixel_size_um": PIXEL_SIZE_UM,
                                "exposure_ms": c["exposure_ms"],
                                "excitation_nm": c["excitation_nm"],
                                "emission_nm": c["emission_nm"],
                                "acquisition_time": t,
                                "operator": OPERATOR,
                                "fixation": FIXATION,
                                "stain": c["stain"],
                                "site": SITE,
                            }
                        )

            well_index = {w: j for j, w in enumerate(well_list)}

            def render(
                w: str,
                f: int,
                k=k,
                plate_wells=plate_wells,
                levels=levels,
                plans=plans,
                plate_illum=plate_illum,
                well_index=well_index,
            ) -> SimulatedField:
                return render_field(
                    plate_wells[w].localizations,
                    child_seq(seed, STREAM_FIELD, k, well_index[w], f),
                    field_size=field_size,
                    pixel_size_um=PIXEL_SIZE_UM,
                    expression=levels[w],
                    illumination=plate_illum,
                    defect=plans.get((w, f)),
                )

            keys = [
                (w, f, ch) for w in well_list for f in range(fields_per_well) for ch in CHANNELS
            ]
            extra_files = None
            if defects:
                buf = io.StringIO()
                pd.DataFrame(defect_rows, columns=list(DEFECTS_COLUMNS)).to_csv(
                    buf, index=False, lineterminator="\n"
                )
                extra_files = {plates.DEFECTS_CSV: buf.getvalue().encode("utf-8")}
            extra_info = {
                "instrument": INSTRUMENT,
                "objective": OBJECTIVE,
                "numerical_aperture": NUMERICAL_APERTURE,
                "pixel_size_um": PIXEL_SIZE_UM,
                "field_size": field_size,
                "fields_per_well": fields_per_well,
                "cell_line": CELL_LINE,
                "channels": {
                    ch: {kk: v for kk, v in c.items() if kk != "background_adu"}
                    for ch, c in CHANNELS.items()
                },
                "simulator": {
                    "name": SIMULATOR_NAME,
                    "version": SIMULATOR_VERSION,
                    "seed": int(seed),
                    "plate_index": k,
                    "n_plates": n_plates,
                    "wells": wells,
                    "defects": bool(defects),
                    "defect_rate": float(defect_rate),
                    "start_time": start_time,
                    "panel_source": panel_source,
                    "panel_size": len(panel),
                    "panel_sha256": panel_sha,
                    "camera_offset_adu": CAMERA_OFFSET_ADU,
                    "read_noise_adu": READ_NOISE_ADU,
                    "gain_adu_per_e": GAIN_ADU_PER_E,
                    "expression_adu": {w: round(v, 1) for w, v in sorted(levels.items())},
                },
            }
            written.append(
                plates.write_plate(
                    out_dir,
                    pid,
                    _LazyImages(keys, render, bar),
                    rows,
                    plate_wells,
                    extra_info=extra_info,
                    extra_files=extra_files,
                )
            )
    finally:
        if bar is not None:
            bar.close()
    return written
