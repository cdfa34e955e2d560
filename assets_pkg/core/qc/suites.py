"""The Great Expectations side: the suites built from the rules, run on the tables.

The GX context (ephemeral, in memory) and the suites -- one per (suite, table) pair, built from
:func:`~assets_pkg.core.qc.rules.build_checks` -- are made once per process on first use
(:func:`gx_state`; importing GX takes seconds) and reused.  :func:`run_suite` validates one
table; :func:`failures_from_result` and :func:`column_failures` turn failed GX results into
:class:`~assets_pkg.core.qc.report.Failure` objects that name the offending files.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..imaging import plates
from .report import MAX_EXAMPLES, Failure, json_safe
from .rules import Check, RowContext, build_checks
from .tables import cell_text

__all__ = ["SUITES", "GxState", "gx_state", "run_suite", "failures_from_result", "column_failures"]

#: Names of the suites, in the order they are reported.
SUITES: tuple[str, ...] = ("schema", "provenance", "checksums", "geometry", "images")


@dataclass
class GxState:
    """The process-wide Great Expectations objects: one ephemeral context, static suites.

    Attributes
    ----------
    context, batch_definition
        The GX context and the whole-dataframe batch definition of its one pandas asset.
    suites : dict
        ``(suite, frame) -> ExpectationSuite``.
    columns : dict
        ``(suite, frame) ->`` the columns its expectations read.
    checks : dict
        Check key -> :class:`~assets_pkg.core.qc.rules.Check`.
    lock : threading.Lock
        Held while a suite runs (the context is not thread-safe).
    """

    context: Any
    batch_definition: Any
    suites: dict[tuple[str, str], Any]  # (suite, frame) -> ExpectationSuite
    columns: dict[tuple[str, str], list[str]]  # (suite, frame) -> columns its expectations read
    checks: dict[str, Check]
    lock: threading.Lock


_STATE: GxState | None = None
_STATE_LOCK = threading.Lock()


def gx_state() -> GxState:
    """The process-wide GX context and suites, built on first use (importing GX takes seconds)."""
    global _STATE
    with _STATE_LOCK:
        if _STATE is None:
            _STATE = _build_gx()
    return _STATE


def _build_gx() -> GxState:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx
        import great_expectations.expectations as gxe
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    asset = context.data_sources.add_pandas("cellscape").add_dataframe_asset("plate_frame")
    batch_definition = asset.add_batch_definition_whole_dataframe("whole_frame")
    checks = build_checks()
    grouped: dict[tuple[str, str], list] = {}
    for c in checks:
        expectation = getattr(gxe, c.gx_class)(**dict(c.kwargs), meta={"check": c.key})
        grouped.setdefault((c.suite, c.frame), []).append(expectation)
    suites = {}
    for (suite, frame), expectations in grouped.items():
        s = gx.ExpectationSuite(name=f"cellscape.{suite}.{frame}", expectations=expectations)
        suites[(suite, frame)] = context.suites.add(s)
        assert len(suites[(suite, frame)].expectations) == len(expectations), "GX merged expectations"
    columns = {
        key: _columns_used(c for c in checks if (c.suite, c.frame) == key) for key in suites
    }
    return GxState(
        context, batch_definition, suites, columns, {c.key: c for c in checks}, threading.Lock()
    )


def _columns_used(checks: Iterable[Check]) -> list[str]:
    cols: list[str] = ["_row"]
    for c in checks:
        kw = c.kwargs
        cols += [kw[k] for k in ("column", "column_A", "column_B") if k in kw]
        cols += list(kw.get("column_list", []))
    return list(dict.fromkeys(cols))


def run_suite(state: GxState, suite: str, frame: str, df: pd.DataFrame, params: dict) -> list:
    """Validate ``df`` with the expectations of ``suite`` on that frame; the GX results.

    Parameters
    ----------
    state : GxState
        From :func:`gx_state`.
    suite : str
        One of :data:`SUITES`.
    frame : {"rows", "columns", "files"}
        Which table ``df`` is (:mod:`assets_pkg.core.qc.tables`).
    df : pandas.DataFrame
        The table.
    params : dict
        Expectation parameters: ``instruments`` (names) and ``now_epoch`` (POSIX seconds).

    Returns
    -------
    list
        GX ``ExpectationValidationResult`` objects, empty when the suite has no rule on
        that table.

    Row frames are cut to the columns the suite reads: GX copies the domain frame per metric,
    so a narrow frame is much faster.
    """
    if (suite, frame) not in state.suites:
        return []
    result_format: dict[str, Any] = {
        "result_format": "COMPLETE",
        "include_unexpected_rows": False,
        "return_unexpected_index_query": False,
    }
    if frame != "columns":
        df = df[state.columns[(suite, frame)]]
        result_format["unexpected_index_column_names"] = ["_row"]
    with state.lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = state.batch_definition.get_batch(batch_parameters={"dataframe": df})
        result = batch.validate(
            state.suites[(suite, frame)], result_format=result_format, expectation_parameters=params
        )
    return list(result.results)


# --------------------------------------------------------------------------------------------
# GX results -> failures


def failures_from_result(r: Any, check: Check, ctx: RowContext | None, frame: pd.DataFrame) -> list[Failure]:
    """The failures one failed GX result stands for, naming the offending rows' files.

    Parameters
    ----------
    r : ExpectationValidationResult
        A failed result of ``check``'s expectation.
    check : Check
        The rule.
    ctx : RowContext or None
        For rules on the rows table (row explanations); None for the files table.
    frame : pandas.DataFrame
        The table validated.

    Returns
    -------
    list of Failure
        One, or one per metadata column for a rule with ``split``.
    """
    gx_type = r.expectation_config.type
    exc = r.exception_info or {}
    if exc.get("raised_exception"):
        msg = f"{check.summary}: expectation raised {exc.get('exception_message')}"
        return [Failure(check.suite, gx_type, check.column, msg, [], [])]
    res = r.result or {}
    idx = res.get("unexpected_index_list")
    if not idx:
        observed = res.get("observed_value")
        msg = check.summary + (f" (observed {observed})" if observed is not None else "")
        return [Failure(check.suite, gx_type, check.column, msg, [plates.METADATA_CSV], [])]
    rows = sorted({int(d["_row"]) for d in idx})
    total = res.get("element_count", len(frame))
    if not check.split:
        return [_row_failure(check, gx_type, check.column, check.summary, check.detail, rows, total, ctx, frame)]
    out = []
    by_column: dict[str, list[int]] = {}
    for i in rows:
        for col in str(frame.at[i, check.kwargs["column"]]).split(","):
            by_column.setdefault(col, []).append(i)
    for col, (summary, detail) in check.split.items():
        if col in by_column:
            out.append(_row_failure(check, gx_type, col, summary, detail, by_column[col], total, ctx, frame))
    return out


def _row_failure(
    check: Check,
    gx_type: str,
    column: str | None,
    summary: str,
    detail: Callable[[RowContext, int], str] | None,
    rows: list[int],
    total: int,
    ctx: RowContext | None,
    frame: pd.DataFrame,
) -> Failure:
    if column and ctx is not None and column in plates.METADATA_COLUMNS and column not in ctx.csv_columns:
        # one failure for the whole column, not one per row (schema names the column too)
        msg = f"{summary}: column '{column}' is missing from metadata.csv"
        return Failure(check.suite, gx_type, column, msg, [plates.METADATA_CSV], [])
    files, examples = [], []
    for i in rows:
        name = cell_text(frame.at[i, "file_name"]) if "file_name" in frame.columns else None
        files.append(name if name is not None else f"metadata.csv line {i + 2}")
        if len(examples) < MAX_EXAMPLES:
            ex: dict[str, Any] = {"file_name": name}
            if ctx is not None:
                ex["line"] = i + 2  # line of metadata.csv (header is line 1)
            if column and column != "file_name" and ctx is not None:
                v = ctx.val(i, column)
                ex[column] = v if isinstance(v, float) and not math.isnan(v) else ctx.raw(i, column)
            for col in check.compare:
                ex[col.lstrip("_")] = frame.at[i, col]
            ex["detail"] = detail(ctx, i) if (detail and ctx is not None) else summary
            examples.append(ex)
    msg = f"{summary} in {len(rows)} of {total} row(s)"
    return Failure(check.suite, gx_type, column, msg, files, json_safe(examples))


def column_failures(r: Any, check: Check) -> list[Failure]:
    """The failures of the column-set rule: one per missing or unexpected column."""
    mismatched = ((r.result or {}).get("details") or {}).get("mismatched") or {}
    out = []
    for col in mismatched.get("missing", []):
        out.append(Failure(check.suite, r.expectation_config.type, col,
                           "column is missing from metadata.csv", [plates.METADATA_CSV], []))
    for col in mismatched.get("unexpected", []):
        out.append(Failure(check.suite, r.expectation_config.type, col,
                           "unexpected column in metadata.csv (not in the plate format)",
                           [plates.METADATA_CSV], []))
    if not out:
        out.append(Failure(check.suite, r.expectation_config.type, None,
                           f"{check.summary}: {r.result}", [plates.METADATA_CSV], []))
    return out
