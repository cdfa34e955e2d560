"""Checks of what an asset attaches for the Dagster UI, shared by the tests of the Dagster layer."""

import base64
import io
import re

import dagster as dg
from PIL import Image

from assets_pkg.core.plots.figures import METADATA_MAX_WIDTH_PX

_PNG = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")
_MD_TABLE = re.compile(r"^\s*\|?\s*:?-{3,}", re.M)


def inline_pngs(text: str) -> list[Image.Image]:
    """The images a Markdown text embeds as PNG data URIs."""
    return [Image.open(io.BytesIO(base64.b64decode(m))) for m in _PNG.findall(text)]


def assert_ui_metadata(metadata: dict) -> int:
    """Every inline figure fits the metadata dialog and has its full-size file beside it
    (``<key>_path``), and no Markdown entry holds a table (tables are typed Dagster tables).

    Returns the number of figures checked.
    """
    figures = 0
    for key, value in metadata.items():
        if not isinstance(value, dg.MarkdownMetadataValue):
            continue
        text = value.value or ""
        assert not _MD_TABLE.search(text), f"{key}: a Markdown table; use table_metadata"
        for im in inline_pngs(text):
            figures += 1
            assert im.width <= METADATA_MAX_WIDTH_PX, f"{key}: inline figure {im.width} px wide"
            full = metadata.get(f"{key}_path")
            assert isinstance(full, dg.PathMetadataValue), f"{key}: no {key}_path beside the figure"
            with Image.open(full.value) as f:
                assert abs(f.width / f.height - im.width / im.height) < 0.01, f"{key}: aspect changed"
                assert f.width >= im.width
    return figures
