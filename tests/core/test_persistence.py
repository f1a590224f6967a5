import zipfile

import numpy as np
import pytest

from nnint.errors import SessionFileError
from nnint.image import Image
from nnint.prompts import Box, Lasso, Point, Scribble
from nnint.session import Session


def _busy_session(image, engine, **kw):
    s = Session(image, engine, **kw)
    s.add(Point((3, 4, 5)))
    s.add(Scribble.from_polyline([[4, 1, 1], [4, 8, 12]], 2, positive=False))
    s.add(Lasso.from_polygon([[2, 2, 2], [2, 9, 2], [2, 9, 9]]))
    s.undo()
    liver = s.new_object("liver", label=7)
    s.add(Box((1, 0, 0), (2, 10, 10)))
    s.confirm(liver.id)
    mask = np.zeros(image.shape, np.uint8)
    mask[5:8, 5:8, 5:8] = 1
    s.object_from_mask(mask, name="seeded")
    return s


def _state(s):
    return [(o.id, o.name, o.label, o.locked, o.version, o.mask.tobytes(), len(o.applied), o.can_redo,
             [type(p).__name__ for p in o.prompts]) for o in s.objects] + [s.active.id]


def test_save_load_round_trip_with_history(tmp_path, small_image, toy_engine):
    path_img = tmp_path / "img.nii.gz"
    small_image.write(path_img)
    image = Image.read(path_img)
    s = _busy_session(image, toy_engine)
    s.save(tmp_path / "a.nnint")
    loaded = Session.load(tmp_path / "a.nnint", engine=toy_engine)  # image re-read from its path
    assert _state(loaded) == _state(s)
    loaded.select(1)
    loaded.redo()  # history survives the round trip
    s.select(1)
    s.redo()
    assert np.array_equal(loaded.get(1).mask, s.get(1).mask)
    assert loaded.get(1).prompts == s.get(1).prompts


def test_autosave_after_each_interaction(tmp_path, small_image, toy_engine):
    auto = tmp_path / "auto.nnint"
    s = Session(small_image, toy_engine, autosave=auto)
    s.add(Point((3, 4, 5)))
    s.add(Point((6, 6, 6)))
    crashed = Session.load(auto, engine=toy_engine, image=small_image)
    assert _state(crashed) == _state(s)
    assert not (tmp_path / "auto.nnint.tmp").exists()


def test_load_rejects_wrong_image_and_corrupt_files(tmp_path, small_image, toy_engine):
    s = _busy_session(small_image, toy_engine)
    path = tmp_path / "s.nnint"
    s.save(path)
    other = Image(small_image.array + 1)
    with pytest.raises(SessionFileError, match="differ"):
        Session.load(path, toy_engine, image=other)
    with pytest.raises(SessionFileError, match="shape"):
        Session.load(path, toy_engine, image=Image(np.random.rand(3, 3, 3)))
    with pytest.raises(SessionFileError, match="no image path"):
        Session.load(path, toy_engine)
    data = path.read_bytes()
    (tmp_path / "trunc.nnint").write_bytes(data[: len(data) // 2])
    with pytest.raises(SessionFileError, match="corrupt"):
        Session.load(tmp_path / "trunc.nnint", toy_engine, image=small_image)
    (tmp_path / "junk.nnint").write_bytes(b"hello")
    with pytest.raises(SessionFileError):
        Session.load(tmp_path / "junk.nnint", toy_engine, image=small_image)
    with pytest.raises(SessionFileError, match="does not exist"):
        Session.load(tmp_path / "none.nnint", toy_engine, image=small_image)
    # a valid zip with a damaged blob
    with zipfile.ZipFile(path) as zf, zipfile.ZipFile(tmp_path / "bad.nnint", "w") as out:
        for name in zf.namelist():
            out.writestr(name, b"\x00garbage" if name == "blobs/0" else zf.read(name))
    with pytest.raises(SessionFileError):
        Session.load(tmp_path / "bad.nnint", toy_engine, image=small_image)
    with zipfile.ZipFile(path) as zf, zipfile.ZipFile(tmp_path / "v9.nnint", "w") as out:
        for name in zf.namelist():
            out.writestr(name, zf.read(name).replace(b'"version": 1', b'"version": 9') if name == "session.json" else zf.read(name))
    with pytest.raises(SessionFileError, match="Upgrade nnint"):
        Session.load(tmp_path / "v9.nnint", toy_engine, image=small_image)
