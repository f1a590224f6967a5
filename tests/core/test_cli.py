import json

import numpy as np
import pytest

from nnint.cli import main
from nnint.default_plugins.commands import parse_cli_prompt
from nnint.errors import InvalidPromptError
from nnint.image import Geometry, Image
from nnint.prompts import Box, Point


@pytest.fixture
def sphere_file(tmp_path):
    z, y, x = np.mgrid[:24, :32, :32]
    arr = np.where((z - 12) ** 2 + (y - 16) ** 2 + (x - 16) ** 2 < 36, 300, 20).astype(np.int16)
    arr = arr + np.random.default_rng(0).normal(0, 5, arr.shape).astype(np.int16)
    path = tmp_path / "sphere.nii.gz"
    Image(arr, Geometry((5.0, 6.0, 7.0), (0.8, 0.8, 2.0))).write(path)
    return path


def test_parse_cli_prompt():
    assert parse_cli_prompt("point", "1,2,3") == Point((1, 2, 3))
    assert parse_cli_prompt("point", "1,2,3:neg") == Point((1, 2, 3), False)
    assert parse_cli_prompt("box", "1,2,3,2,5,6") == Box((1, 2, 3), (2, 5, 6))
    for kind, text in [("point", "1,2"), ("point", "a,b,c"), ("point", "1,2,3:maybe"), ("box", "1,2,3,1,5,6")]:
        with pytest.raises(InvalidPromptError):
            parse_cli_prompt(kind, text)


def test_segment_writes_mask_in_image_geometry(sphere_file, tmp_path, capsys):
    out = tmp_path / "mask.nii.gz"
    png = tmp_path / "overview.png"
    rc = main(["segment", str(sphere_file), "--backend", "classical", "--point", "12,16,16",
               "--box", "12,8,8,13,24,24", "-o", str(out), "--overview", str(png)])
    assert rc == 0
    mask = Image.read(out)
    assert mask.geometry == Image.read(sphere_file).geometry
    assert mask.array[12, 16, 16] == 1 and mask.array[0, 0, 0] == 0
    import matplotlib.image

    pixels = matplotlib.image.imread(png)
    assert pixels.std() > 0.05


def test_segment_with_prompt_file(sphere_file, tmp_path):
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"prompts": [
        {"kind": "lasso", "polygon": [[12, 10, 10], [12, 10, 22], [12, 22, 22], [12, 22, 10]]},
        {"kind": "point", "zyx": [12, 16, 16]},
    ]}))
    rc = main(["segment", str(sphere_file), "--backend", "classical", "--prompts", str(prompts), "-o", str(tmp_path / "m.nrrd")])
    assert rc == 0


@pytest.mark.parametrize("args, message", [
    (["--point", "100,1,1"], "outside the image"),
    (["--box", "1,1,1,1,5,5"], "zero size"),
    ([], "no prompts"),
    (["--point", "1,1,1", "--backend", "nope"], "unknown backend"),
    (["--point", "1,1,1", "--model", "nope"], "unknown model"),
])
def test_segment_errors_are_one_line_and_nonzero(sphere_file, tmp_path, capsys, args, message):
    rc = main(["segment", str(sphere_file), "-o", str(tmp_path / "m.nii.gz"), *args] + ([] if "--backend" in args or "--model" in args else ["--backend", "classical"]))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert message in err[-1] and err[-1].startswith("nnint segment: error:")


def test_missing_image_file(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "x.nii.gz"), "--backend", "classical", "--point", "1,1,1", "-o", "m.nii.gz"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_info_and_models(sphere_file, capsys):
    assert main(["info", str(sphere_file)]) == 0
    out = capsys.readouterr().out
    assert "(24, 32, 32)" in out and "2.0, 0.8, 0.8" in out
    assert main(["models"]) == 0
    assert "classical" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    json.loads(capsys.readouterr().out)


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("segment", "info", "models"):
        assert cmd in out
