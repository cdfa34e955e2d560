"""OME-TIFF and CZI files through bioio: pixels, and metadata mapped to provenance or refused naming the field."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import numpy as np
import pytest

from assets_pkg.core.errors import ImageFormatError
from assets_pkg.core.imaging.ome import (
    HCS_FIELDS,
    REQUIRED_FIELDS,
    OmeMetadataError,
    provenance_from_czi,
    read_ome_image,
    read_provenance,
)


def write_ome_tiff(path, pixels, *, pixel_size=0.1, when=datetime(2024, 5, 1, 12, 0, tzinfo=UTC), well=(1, 2)):
    """A small OME-TIFF: one image (C, Y, X) uint16 with instrument, experimenter and plate metadata."""
    import tifffile
    from ome_types import model as m
    from ome_types import to_xml

    c, h, w = pixels.shape
    extra = {} if pixel_size is None else {"physical_size_x": pixel_size, "physical_size_y": pixel_size}
    ome = m.OME(
        experimenters=[m.Experimenter(id="Experimenter:0", user_name="jdoe")],
        instruments=[
            m.Instrument(
                id="Instrument:0",
                microscope=m.Microscope(manufacturer="Andor", model="dragonfly-63x"),
                objectives=[m.Objective(id="Objective:0:0", model="63x/1.47 oil", lens_na=1.47)],
            )
        ],
        images=[
            m.Image(
                id="Image:0",
                acquisition_date=when,
                experimenter_ref=m.ExperimenterRef(id="Experimenter:0"),
                instrument_ref=m.InstrumentRef(id="Instrument:0"),
                objective_settings=m.ObjectiveSettings(id="Objective:0:0"),
                pixels=m.Pixels(
                    id="Pixels:0", dimension_order="XYZCT", type="uint16",
                    size_x=w, size_y=h, size_z=1, size_c=c, size_t=1, **extra,
                    channels=[
                        m.Channel(id="Channel:0:0", name="Hoechst", samples_per_pixel=1,
                                  excitation_wavelength=405, emission_wavelength=450),
                        m.Channel(id="Channel:0:1", name="mNeonGreen", samples_per_pixel=1,
                                  excitation_wavelength=0.488, excitation_wavelength_unit="µm",
                                  emission_wavelength=525),
                    ][:c],
                    planes=[m.Plane(the_z=0, the_c=k, the_t=0, exposure_time=0.1 * (k + 1)) for k in range(c)],
                    tiff_data_blocks=[m.TiffData(plane_count=c)],
                ),
            )
        ],
        plates=[] if well is None else [
            m.Plate(id="Plate:0", name="P1", wells=[m.Well(id="Well:0", row=well[0], column=well[1], well_samples=[
                m.WellSample(id="WellSample:0", index=0),
                m.WellSample(id="WellSample:1", index=1, image_ref=m.ImageRef(id="Image:0"))])])
        ],
    )
    tifffile.imwrite(path, pixels, description=to_xml(ome).encode(), metadata=None, photometric="minisblack")
    return path


@pytest.fixture
def pixels():
    return np.random.default_rng(0).integers(0, 4096, (2, 24, 32), dtype=np.uint16)


def test_complete_ome_tiff_maps_every_field(tmp_path, pixels):
    path = write_ome_tiff(tmp_path / "A01.ome.tif", pixels)
    before = path.read_bytes()
    data, prov = read_ome_image(path, required=REQUIRED_FIELDS + HCS_FIELDS)
    assert data.dtype == np.uint16 and np.array_equal(data, pixels)
    assert prov.format == "ome-tiff" and prov.shape == (2, 24, 32) and prov.dtype == "uint16"
    assert prov.pixel_size_um == pytest.approx(0.1)
    assert prov.channel_names == ("Hoechst", "mNeonGreen")
    assert (prov.well, prov.field_id, prov.plate_name) == ("B03", 2, "P1")
    assert prov.acquisition_time == "2024-05-01T12:00:00Z"
    assert (prov.instrument, prov.objective, prov.numerical_aperture) == ("dragonfly-63x", "63x/1.47 oil", 1.47)
    assert prov.operator == "jdoe"
    assert prov.excitation_nm == pytest.approx((405.0, 488.0))  # 0.488 um in nm
    assert prov.emission_nm == pytest.approx((450.0, 525.0))
    assert prov.exposure_ms == pytest.approx((100.0, 200.0))  # OME's default unit is the second
    assert prov.failures(REQUIRED_FIELDS + HCS_FIELDS) == {}
    rows = prov.metadata_rows({"Hoechst": "nucleus", "mNeonGreen": "protein"}, gene="LMNB1")
    assert [r["channel"] for r in rows] == ["nucleus", "protein"]
    assert rows[1]["excitation_nm"] == pytest.approx(488.0) and rows[1]["exposure_ms"] == pytest.approx(200.0)
    assert rows[0]["bit_depth"] == 16 and (rows[0]["height"], rows[0]["width"]) == (24, 32)
    assert rows[0]["gene"] == "LMNB1" and rows[0]["well"] == "B03"
    assert path.read_bytes() == before  # raw files are only read


def test_ome_tiff_without_pixel_size_fails_naming_the_field(tmp_path, pixels):
    path = write_ome_tiff(tmp_path / "A01.ome.tif", pixels, pixel_size=None)
    prov = read_provenance(path)
    assert prov.pixel_size_um is None
    assert list(prov.failures()) == ["pixel_size_um"]
    with pytest.raises(OmeMetadataError) as e:
        read_ome_image(path)
    assert e.value.field == "pixel_size_um" and str(path) in str(e.value)
    # nothing is guessed: reading without requirements leaves it empty
    data, prov = read_ome_image(path, required=None)
    assert np.array_equal(data, pixels) and prov.pixel_size_um is None


def test_naive_time_and_absent_plate_are_failures_not_guesses(tmp_path, pixels):
    path = write_ome_tiff(tmp_path / "x.ome.tiff", pixels, when=datetime(2024, 5, 1, 12, 0), well=None)
    prov = read_provenance(path)
    bad = prov.failures(REQUIRED_FIELDS + HCS_FIELDS)
    assert list(bad) == ["acquisition_time", "well", "field_id"]
    assert "time zone" in bad["acquisition_time"]
    with pytest.raises(OmeMetadataError) as e:
        prov.require(REQUIRED_FIELDS + HCS_FIELDS)
    assert e.value.field == "acquisition_time" and "field_id" in str(e.value)


def test_other_files_are_refused_naming_the_file(tmp_path):
    p = tmp_path / "a.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ImageFormatError) as e:
        read_provenance(p)
    assert e.value.field == "file_name"
    bad = tmp_path / "b.ome.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageFormatError) as e:
        read_provenance(bad)
    assert str(bad) in str(e.value)


# ---------------------------------------------------------------------------------- CZI


def write_czi(path, pixels, scale_m=1e-7):
    """A CZI written by Zeiss' own library (pylibCZIrw): pixels, channel names and scaling only."""
    from pylibCZIrw import czi as pyczi

    with pyczi.create_czi(str(path)) as w:
        for c in range(pixels.shape[0]):
            w.write(data=pixels[c], plane={"C": c, "T": 0, "Z": 0}, scene=0)
        # CZI stores the pixel edge in metres (bioio-czi converts to micrometres)
        w.write_metadata(document_name="A01", channel_names={0: "Hoechst", 1: "mNeonGreen"},
                         scale_x=scale_m, scale_y=scale_m)
    return path


def test_czi_pixels_pixel_size_and_channels(tmp_path, pixels):
    path = write_czi(tmp_path / "a.czi", pixels)
    prov = read_provenance(path)
    assert prov.format == "czi" and prov.shape == (2, 24, 32)
    assert prov.pixel_size_um == pytest.approx(0.1)
    assert prov.channel_names == ("Hoechst", "mNeonGreen")
    # pylibCZIrw writes no instrument, time or operator: each is a failure named, never a default
    assert list(prov.failures()) == ["acquisition_time", "instrument", "objective", "numerical_aperture", "operator"]
    data, _ = read_ome_image(path, required=("pixel_size_um", "channel_names"))
    assert np.array_equal(data, pixels)


def test_czi_without_scaling_fails_on_pixel_size(tmp_path, pixels):
    path = write_czi(tmp_path / "a.czi", pixels, scale_m=0.0)
    with pytest.raises(OmeMetadataError) as e:
        read_ome_image(path, required=("pixel_size_um", "channel_names"))
    assert e.value.field == "pixel_size_um"


def test_czi_mapping_of_instrument_time_operator_and_well(tmp_path, pixels):
    """The mapping on the plugin's metadata object, completed with the ZEN elements a microscope writes."""
    import bioio_czi
    from bioio import BioImage

    img = BioImage(write_czi(tmp_path / "a.czi", pixels), reader=bioio_czi.Reader)
    root = copy.deepcopy(img.metadata)
    info = root.find("Metadata/Information")
    image = info.find("Image")
    ET.SubElement(image, "AcquisitionDateAndTime").text = "2024-05-01T14:00:00.5+02:00"
    ch = image.findall("Dimensions/Channels/Channel")
    ET.SubElement(ch[0], "ExcitationWavelength").text = "405"
    ET.SubElement(ch[0], "EmissionWavelength").text = "450"
    scene = ET.SubElement(ET.SubElement(ET.SubElement(image.find("Dimensions"), "S"), "Scenes"), "Scene", Index="0")
    shape = ET.SubElement(scene, "Shape", Name="C4")
    ET.SubElement(shape, "RowIndex").text = "2"
    ET.SubElement(shape, "ColumnIndex").text = "3"
    inst = ET.SubElement(info, "Instrument")
    ET.SubElement(ET.SubElement(inst, "Microscopes"), "Microscope", Name="Celldiscoverer 7")
    obj = ET.SubElement(ET.SubElement(inst, "Objectives"), "Objective", Name="Plan-Apochromat 20x/0.95")
    ET.SubElement(obj, "LensNA").text = "0.95"
    ET.SubElement(info.find("Document"), "UserName").text = "jdoe"
    sizes = img.physical_pixel_sizes
    prov = provenance_from_czi(root, (sizes.X, sizes.Y), img.channel_names, (2, 24, 32), "uint16", 0, "a.czi")
    assert prov.failures(REQUIRED_FIELDS + ("well",)) == {}
    assert prov.acquisition_time == "2024-05-01T12:00:00.500000Z"
    assert (prov.instrument, prov.objective, prov.numerical_aperture) == (
        "Celldiscoverer 7", "Plan-Apochromat 20x/0.95", 0.95)
    assert prov.operator == "jdoe" and prov.well == "C04"
    assert prov.excitation_nm == (405.0, None) and prov.emission_nm == (450.0, None)
    assert prov.failures(HCS_FIELDS) == {"field_id": "not stated in the file"}
