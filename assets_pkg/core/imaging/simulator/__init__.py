"""The virtual microscope: synthetic OpenCell-like plates of live HEK293T cells.

Each field is a pair of 2-D uint16 images of shape (field_size, field_size), axis order
(y, x): channel ``nucleus`` (Hoechst 33342) and channel ``protein`` (an endogenously tagged
protein, mNeonGreen).  A field is rendered in four steps, all vectorised NumPy / SciPy (the
only Python loops run over cells, never over pixels):

1. **Layout** (:class:`Geometry`): nuclei are irregular ellipses placed in HEK293T-like
   colonies (clustered, touching, slightly compressed where they meet); a cell body is grown
   from each nucleus by a distance-limited, asymmetric Voronoi partition.  A few cells are
   mitotic (small, round, condensed and bright).  Nucleoli (1-4 per nucleus) sit inside.
2. **Fluorophore maps** in ADU above background: Hoechst is chromatin texture with a
   brighter periphery and dark nucleoli; the protein channel mixes one pattern per
   localization class (:data:`PATTERNS`), weighted by grade, scaled by a per-protein
   expression level and a per-cell factor.
3. **Optics**: Gaussian PSF, a little out-of-focus haze (the max projection of a confocal
   stack), smooth vignetting.
4. **Camera**: Poisson shot noise, gain, ~100 ADU offset, Gaussian read noise, rounding and
   clipping into uint16.

Optional acquisition defects (out of focus, saturation, debris, a blank channel) are planned from their own
random stream and recorded.  Every random draw comes from a :class:`numpy.random.Generator`
seeded by a :class:`numpy.random.SeedSequence` whose ``spawn_key`` names the plate, well,
field and purpose, so a field's pixels depend only on (seed, plate, well, field) and never on
iteration order, wall clock or hash order: the same arguments write byte-identical plates.

:func:`simulate_plates` writes plate folders through :func:`assets_pkg.core.imaging.plates.write_plate`;
:func:`render_field` renders one field and returns its ground truth (nucleus and cell label
images, nucleolus mask) for tests and for scoring segmentation.

The package follows those steps: :mod:`.common` (instrument, channels, random streams, array
helpers), :mod:`.geometry` (1), :mod:`.patterns` (2), :mod:`.optics` (3 and 4),
:mod:`.defects`, :mod:`.render` (one field) and :mod:`.writer` (plates).  Callers use the
names re-exported here.
"""

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
)
from .defects import DEFECT_KINDS, DEFECTS_COLUMNS, DefectPlan, plan_defect
from .geometry import Geometry, make_geometry
from .optics import (
    CAMERA_OFFSET_ADU,
    FULL_SCALE,
    GAIN_ADU_PER_E,
    READ_NOISE_ADU,
    illumination_profile,
    psf_sigma_px,
)
from .patterns import GRADE_WEIGHT, PATTERNS
from .render import SimulatedField, render_field
from .writer import acquisition_time, parse_start_time, protein_expression, simulate_plates

__all__ = [
    "BIT_DEPTH",
    "CAMERA_OFFSET_ADU",
    "CELL_LINE",
    "CHANNELS",
    "DEFECTS_COLUMNS",
    "DEFECT_KINDS",
    "FIELD_SIZE",
    "FIXATION",
    "FULL_SCALE",
    "GAIN_ADU_PER_E",
    "GRADE_WEIGHT",
    "INSTRUMENT",
    "NUMERICAL_APERTURE",
    "OBJECTIVE",
    "OPERATOR",
    "PATTERNS",
    "PIXEL_SIZE_UM",
    "READ_NOISE_ADU",
    "SIMULATOR_NAME",
    "SIMULATOR_VERSION",
    "SITE",
    "DefectPlan",
    "Geometry",
    "SimulatedField",
    "acquisition_time",
    "illumination_profile",
    "make_geometry",
    "parse_start_time",
    "plan_defect",
    "protein_expression",
    "psf_sigma_px",
    "render_field",
    "simulate_plates",
]
