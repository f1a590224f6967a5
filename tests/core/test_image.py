import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from nnint.errors import ImageIOError, InvalidImageError, InvalidMaskError
from nnint.image import Geometry, Image, validate_mask


def _rotation(a, b, c):
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


finite = st.floats(-500, 500, allow_nan=False)
spacing = st.floats(0.1, 5.0)
# no near-zero non-zero angles: ITK's direction-matrix SVD (vnl) returns NaN when sines of ~1e-305
# make matrix products subnormal; exact zero and |angle| >= 1e-6 cover every real orientation
angle = st.one_of(st.just(0.0), st.floats(1e-6, np.pi), st.floats(-np.pi, -1e-6))


@settings(max_examples=60)
@given(st.tuples(finite, finite, finite), st.tuples(spacing, spacing, spacing), angle, angle, angle,
       st.tuples(*[st.floats(-20, 300, allow_nan=False)] * 3))
def test_index_world_agrees_with_simpleitk(origin, sp, a, b, c, zyx):
    direction = _rotation(a, b, c)
    g = Geometry(origin, sp, direction.reshape(-1))
    itk = sitk.Image(4, 4, 4, sitk.sitkUInt8)
    itk.SetOrigin(origin)
    itk.SetSpacing(sp)
    itk.SetDirection(direction.reshape(-1).tolist())
    ours = g.index_to_world(zyx)
    theirs = itk.TransformContinuousIndexToPhysicalPoint([zyx[2], zyx[1], zyx[0]])
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    back = g.world_to_index(theirs)
    itk_back = itk.TransformPhysicalPointToContinuousIndex(theirs)
    np.testing.assert_allclose(back, itk_back[::-1], atol=1e-6)
    np.testing.assert_allclose(back, zyx, atol=1e-6)


def test_ras_frame_negates_x_and_y():
    g = Geometry((1.0, 2.0, 3.0), (1.0, 1.0, 1.0))
    lps = g.index_to_world((0, 0, 0))
    ras = g.index_to_world((0, 0, 0), frame="RAS")
    np.testing.assert_allclose(ras, lps * [-1, -1, 1])
    with pytest.raises(InvalidImageError):
        g.index_to_world((0, 0, 0), frame="XYZ")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_read_write_keeps_geometry(tmp_path, suffix):
    arr = (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 7).astype(np.int16)
    direction = _rotation(0.3, -0.2, 0.1).reshape(-1)
    img = Image(arr, Geometry((1.5, -2.0, 30.0), (0.7, 0.8, 2.5), direction))
    path = tmp_path / f"img{suffix}"
    img.write(path)
    back = Image.read(path)
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.geometry.origin, img.geometry.origin, atol=1e-5)
    np.testing.assert_allclose(back.geometry.spacing, img.geometry.spacing, atol=1e-5)
    np.testing.assert_allclose(back.geometry.direction, img.geometry.direction, atol=1e-5)
    mask = (arr > 3).astype(np.uint8)
    img.write_mask(mask, tmp_path / f"mask{suffix}")
    m = Image.read(tmp_path / f"mask{suffix}")
    np.testing.assert_array_equal(m.array, mask)
    np.testing.assert_allclose(m.geometry.origin, img.geometry.origin, atol=1e-5)


def test_read_dicom_series(tmp_path):
    arr = (np.random.default_rng(0).integers(0, 1000, (3, 8, 9))).astype(np.int16)
    itk = sitk.GetImageFromArray(arr)
    itk.SetSpacing((0.5, 0.6, 2.0))
    itk.SetOrigin((10.0, 20.0, 30.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(arr.shape[0]):
        sl = itk[:, :, k]
        sl.SetMetaData("0020|0032", "\\".join(str(v) for v in itk.TransformIndexToPhysicalPoint((0, 0, k))))
        sl.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        sl.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1")
        sl.SetMetaData("0020|0013", str(k))
        sl.SetMetaData("0008|0060", "CT")
        writer.SetFileName(str(tmp_path / f"{k}.dcm"))
        writer.Execute(sl)
    img = Image.read(tmp_path)
    np.testing.assert_array_equal(img.array, arr)
    np.testing.assert_allclose(img.spacing_zyx, (2.0, 0.6, 0.5), atol=1e-4)


def test_two_d_image_becomes_one_slice(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(12, dtype=np.uint8).reshape(3, 4)), str(tmp_path / "a.png"))
    assert Image.read(tmp_path / "a.png").shape == (1, 3, 4)


@pytest.mark.parametrize("arr, match", [
    (np.zeros((4, 4)), "3D"),
    (np.zeros((2, 4, 4, 4)), "3D"),
    (np.full((4, 4, 4), 3.0), "constant"),
    (np.array([[[np.nan, 1.0]]]), "NaN"),
    (np.array([[[np.inf, 1.0]]]), "NaN or infinite"),
    (np.zeros((3, 3, 3), bool), "not an intensity"),
    (np.zeros((3, 3, 3), complex), "not an intensity"),
])
def test_bad_images_raise(arr, match):
    with pytest.raises(InvalidImageError, match=match):
        Image(arr)


def test_io_errors(tmp_path):
    with pytest.raises(ImageIOError, match="does not exist"):
        Image.read(tmp_path / "nope.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    with pytest.raises(ImageIOError):
        Image.read(tmp_path / "junk.nii.gz")
    with pytest.raises(ImageIOError, match="without a DICOM series"):
        Image.read(tmp_path)


def test_validate_mask():
    assert validate_mask(np.ones((2, 2, 2), bool), (2, 2, 2)).dtype == np.uint8
    with pytest.raises(InvalidMaskError, match="shape"):
        validate_mask(np.ones((2, 2)), (2, 2, 2))
    with pytest.raises(InvalidMaskError, match="only 0 and 1"):
        validate_mask(np.full((2, 2, 2), 3), (2, 2, 2))
