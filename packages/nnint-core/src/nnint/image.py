"""Images that carry their geometry, and reading/writing them through SimpleITK.

Conventions (the same as SimpleITK and ITK, so MITK and Slicer agree with us):

* ``Image.array`` is in **array order (z, y, x)**, as ``sitk.GetArrayFromImage`` returns it.
* ``Geometry.origin`` and ``Geometry.spacing`` are in **physical axis order (x, y, z)** and millimetres;
  ``Geometry.direction`` is a 3x3 row-major matrix whose *columns* are the directions of the
  i, j, k (= x, y, z index) axes, in the LPS frame (ITK's native frame).
* World points are ``(x, y, z)`` in mm, LPS unless ``frame="RAS"`` is given (RAS negates x and y).

``index -> world``:  ``p = origin + D @ (spacing * ijk)`` with ``ijk = zyx[::-1]``; this equals
SimpleITK's ``TransformContinuousIndexToPhysicalPoint``, and the inverse equals
``TransformPhysicalPointToContinuousIndex``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import attrs
import numpy as np

from nnint.errors import ImageIOError, InvalidImageError, InvalidMaskError

Frame = Literal["LPS", "RAS"]
_FRAME_SIGN = {"LPS": np.array([1.0, 1.0, 1.0]), "RAS": np.array([-1.0, -1.0, 1.0])}

#: dtypes an image may have (bool is a mask, not an image; complex is not an intensity).
_IMAGE_KINDS = "iuf"


def _vec3(value) -> tuple[float, float, float]:
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise InvalidImageError(f"expected 3 finite numbers, got {value!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def _direction(value) -> tuple[float, ...]:
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.shape != (9,) or not np.all(np.isfinite(arr)):
        raise InvalidImageError(f"direction must be 9 numbers (3x3 row-major), got {value!r}")
    if abs(abs(np.linalg.det(arr.reshape(3, 3))) - 1.0) > 1e-3:
        raise InvalidImageError("direction must be an orthonormal 3x3 matrix (|det| = 1)")
    return tuple(float(v) for v in arr)


def _frame_sign(frame: str) -> np.ndarray:
    try:
        return _FRAME_SIGN[frame]
    except KeyError:
        raise InvalidImageError(f"unknown frame {frame!r}: use 'LPS' or 'RAS'") from None


@attrs.frozen
class Geometry:
    """Where the voxel grid sits in the world (ITK conventions, see the module docstring)."""

    origin: tuple[float, float, float] = attrs.field(default=(0.0, 0.0, 0.0), converter=_vec3)
    spacing: tuple[float, float, float] = attrs.field(default=(1.0, 1.0, 1.0), converter=_vec3)
    direction: tuple[float, ...] = attrs.field(
        default=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), converter=_direction
    )

    @spacing.validator
    def _positive_spacing(self, _attr, value) -> None:
        if min(value) <= 0:
            raise InvalidImageError(f"spacing must be positive, got {value}")

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in array order (z, y, x), as metrics and models want it."""
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def matrix(self) -> np.ndarray:
        """``D @ diag(spacing)``: maps an (i, j, k) index step to a world step (LPS)."""
        return np.asarray(self.direction).reshape(3, 3) @ np.diag(self.spacing)

    def index_to_world(self, zyx, frame: Frame = "LPS") -> np.ndarray:
        """Continuous index(es) ``(..., 3)`` in (z, y, x) to world point(s) ``(..., 3)`` in (x, y, z) mm."""
        ijk = np.asarray(zyx, dtype=float)[..., ::-1]
        lps = np.asarray(self.origin) + ijk @ self.matrix.T
        return lps * _frame_sign(frame)

    def world_to_index(self, xyz, frame: Frame = "LPS") -> np.ndarray:
        """World point(s) ``(..., 3)`` in (x, y, z) mm to continuous index(es) in (z, y, x)."""
        lps = np.asarray(xyz, dtype=float) * _frame_sign(frame)
        ijk = np.linalg.solve(self.matrix, (lps - np.asarray(self.origin)).T).T
        return ijk[..., ::-1]

    def to_dict(self) -> dict:
        return {"origin": list(self.origin), "spacing": list(self.spacing), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, data: dict) -> Geometry:
        return cls(origin=data["origin"], spacing=data["spacing"], direction=data["direction"])


def validate_image_array(array: np.ndarray) -> None:
    """Raise :class:`InvalidImageError` unless ``array`` is a segmentable 3D intensity volume."""
    if not isinstance(array, np.ndarray):
        raise InvalidImageError(f"image must be a numpy array, got {type(array).__name__}")
    if array.ndim != 3:
        raise InvalidImageError(
            f"image must be 3D (z, y, x), got shape {array.shape}; "
            "add a leading axis for 2D images (array[None]) and pick one channel or time step for 4D"
        )
    if array.dtype.kind not in _IMAGE_KINDS:
        raise InvalidImageError(
            f"image dtype {array.dtype} is not an intensity type; convert to an integer or float array"
        )
    if min(array.shape) < 1:
        raise InvalidImageError(f"image has an empty axis: shape {array.shape}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        n_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise InvalidImageError(
            f"image has {n_bad} NaN or infinite voxels; replace them (e.g. np.nan_to_num) before segmenting"
        )
    flat = array.reshape(-1)
    if flat.size and (flat == flat[0]).all():
        raise InvalidImageError(f"image is constant (every voxel is {flat[0]}); there is nothing to segment")


def validate_mask(mask, shape: tuple[int, ...], what: str = "mask") -> np.ndarray:
    """Return ``mask`` as a C-contiguous uint8 0/1 array of ``shape``, or raise InvalidMaskError."""
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise InvalidMaskError(f"{what} has shape {mask.shape} but must have shape {tuple(shape)}")
    if mask.dtype.kind not in "biuf":
        raise InvalidMaskError(f"{what} dtype {mask.dtype} is not boolean or numeric")
    if mask.dtype != np.bool_ and mask.size:
        if mask.dtype.kind == "f" and not np.isfinite(mask).all():
            raise InvalidMaskError(f"{what} contains NaN or infinite values")
        if not np.isin(mask, (0, 1)).all():
            raise InvalidMaskError(f"{what} must hold only 0 and 1 (binarise it, e.g. mask > 0)")
    return np.ascontiguousarray(mask, dtype=np.uint8)


@attrs.define(eq=False)
class Image:
    """A 3D intensity volume with its geometry.

    ``array`` has shape (z, y, x) and a numeric dtype; ``source`` is the path it was read from, if
    any (sessions save it as the image reference).
    """

    array: np.ndarray
    geometry: Geometry = attrs.field(factory=Geometry)
    source: str | None = None

    def __attrs_post_init__(self) -> None:
        validate_image_array(self.array)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return self.geometry.spacing_zyx

    # --- IO -----------------------------------------------------------------------------------

    @classmethod
    def read(cls, path: str | os.PathLike) -> Image:
        """Read NIfTI, NRRD, MHA (any format SimpleITK reads) or a folder holding one DICOM series."""
        import SimpleITK as sitk

        path = Path(path)
        if not path.exists():
            raise ImageIOError(f"{path} does not exist")
        try:
            if path.is_dir():
                reader = sitk.ImageSeriesReader()
                series = reader.GetGDCMSeriesIDs(str(path))
                if not series:
                    raise ImageIOError(f"{path} is a folder without a DICOM series")
                if len(series) > 1:
                    raise ImageIOError(
                        f"{path} holds {len(series)} DICOM series; point to a folder with exactly one"
                    )
                reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
                itk = reader.Execute()
            else:
                itk = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise ImageIOError(f"cannot read {path}: {str(exc).strip().splitlines()[-1]}") from exc
        return cls.from_sitk(itk, source=str(path.resolve()))

    @classmethod
    def from_sitk(cls, itk, source: str | None = None) -> Image:
        """Wrap a SimpleITK image (2D images become one-slice 3D volumes)."""
        import SimpleITK as sitk

        if itk.GetNumberOfComponentsPerPixel() != 1:
            raise InvalidImageError(
                f"image has {itk.GetNumberOfComponentsPerPixel()} components per voxel; "
                "extract one channel first (sitk.VectorIndexSelectionCast)"
            )
        if itk.GetDimension() == 2:
            itk = sitk.JoinSeries(itk)
        if itk.GetDimension() != 3:
            raise InvalidImageError(
                f"image is {itk.GetDimension()}D; pick one time step or channel to get a 3D volume"
            )
        geometry = Geometry(origin=itk.GetOrigin(), spacing=itk.GetSpacing(), direction=itk.GetDirection())
        return cls(sitk.GetArrayFromImage(itk), geometry, source)

    def to_sitk(self, array: np.ndarray | None = None):
        """A SimpleITK image of ``array`` (default: this image's voxels) in this image's geometry."""
        import SimpleITK as sitk

        itk = sitk.GetImageFromArray(self.array if array is None else array)
        itk.SetOrigin(self.geometry.origin)
        itk.SetSpacing(self.geometry.spacing)
        itk.SetDirection(self.geometry.direction)
        return itk

    def write(self, path: str | os.PathLike) -> None:
        """Write the image; the format follows the file extension."""
        _write_sitk(self.to_sitk(), path)

    def write_mask(self, mask: np.ndarray, path: str | os.PathLike) -> None:
        """Write a mask or label map of this image's shape in this image's geometry."""
        mask = np.asarray(mask)
        if mask.shape != self.shape:
            raise InvalidMaskError(f"mask has shape {mask.shape} but the image has shape {self.shape}")
        if mask.dtype == np.bool_:
            mask = mask.astype(np.uint8)
        _write_sitk(self.to_sitk(mask), path)


def _write_sitk(itk, path: str | os.PathLike) -> None:
    import SimpleITK as sitk

    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        sitk.WriteImage(itk, str(path), useCompression=True)
    except RuntimeError as exc:
        raise ImageIOError(f"cannot write {path}: {str(exc).strip().splitlines()[-1]}") from exc
