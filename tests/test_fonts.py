"""The glyph dataset of vaelib.fonts: what the issue asks of it (counts, the split by family, ink in every
glyph, a licence for every font) on the fonts that `make fonts` installs, and the rendering checked on
a known font (DejaVu Sans, Debian's fonts-dejavu-core)."""
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from vaelib import fonts

DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
NO_DEJAVU = "DejaVu Sans is not installed (Debian's fonts-dejavu-core): run `make fonts`"


def installed_font_packages() -> list[str]:
    """Those of the dataset's Debian packages that dpkg says are installed."""
    if shutil.which("dpkg-query") is None:
        return []
    result = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", *fonts.DEBIAN_PACKAGES],
                            capture_output=True, text=True)
    return [line.split()[0] for line in result.stdout.splitlines() if line.endswith(" installed")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The whole dataset: from the cache that `make fonts` wrote ($VAELIB_FONTS) when it is there and
    matches the installed fonts, else rendered into a temporary folder (about half a minute)."""
    if not installed_font_packages():
        pytest.skip("no font package of vaelib.fonts.DEBIAN_PACKAGES is installed: run `make fonts` "
                    "(as root it installs them with apt-get)")
    root = None if os.environ.get(fonts.ENV_VAR) else tmp_path_factory.mktemp("data")
    return fonts.load_fonts(root, log=lambda line: None)


def test_installed_fonts_meet_the_issues_counts(dataset):
    counts = fonts.counts(dataset.fonts)
    assert counts["fonts"] >= 300, counts
    assert counts["regular_bold_families"] >= 40, counts
    assert counts["held-out"]["regular_bold_families"] >= 5, counts  # enough to test "a little bit heavier"
    assert counts["train"]["fonts"] > 2 * counts["held-out"]["fonts"] > 0, counts


def test_split_keeps_families_apart(dataset):
    sides = {}
    for font in dataset.fonts:
        for key in (font["family"], font["group"], font["split_group"]):
            sides.setdefault(key, set()).add(font["split"])
    assert all(len(found) == 1 for found in sides.values()), {k: v for k, v in sides.items() if len(v) > 1}
    held_out_families = {f["family"] for f in dataset.fonts if f["split"] == "held-out"}
    train = dataset.split("train")
    assert not any(fonts.is_bold(f) and f["family"] in held_out_families for f in train.fonts)
    assert len(train.fonts) + len(dataset.split("held-out").fonts) == len(dataset.fonts)


def test_split_is_a_function_of_the_family_name():
    assert fonts.group_name("DejaVu Sans Condensed") == fonts.group_name("DejaVu Sans") == "dejavu sans"
    assert fonts.group_name("Accanthis ADF Std No2") == "accanthis adf"
    assert fonts.group_name("Roboto Light") == "roboto"
    faces = [{"family": name, "group": fonts.group_name(name), "italic": False, "bold": False, "weight": 400}
             for name in ("Alpha Sans", "Beta Serif", "Gamma Copy")]
    glyphs = np.zeros((3, len(fonts.CHARACTERS), fonts.SIZE, fonts.SIZE), dtype=np.uint8)  # (3, 62, 28, 28)
    glyphs[1, :, 10:20, 5:8] = 255
    glyphs[2] = glyphs[0]  # "Gamma Copy" draws what "Alpha Sans" draws: one design, one side
    glyphs[0, 0, 0, 0] = glyphs[2, 0, 0, 1] = 255
    fonts.assign_split(faces, glyphs)
    assert faces[2]["split_group"] == faces[0]["split_group"] != faces[1]["split_group"]
    again = [dict(face) for face in faces]
    fonts.assign_split(again, glyphs)
    assert [f["split"] for f in again] == [f["split"] for f in faces]


def test_every_glyph_has_ink(dataset):
    x = dataset.x  # (F, 62, 784)
    assert x.shape == (len(dataset.fonts), 62, 784) and str(x.dtype) == "torch.float32"
    assert 0.0 <= x.min() and x.max() <= 1.0
    empty = (x.amax(dim=2) == 0).nonzero().tolist()
    assert not empty, [(dataset.fonts[i]["file"], dataset.characters[j]) for i, j in empty[:5]]


def test_manifest_licences_and_tables_present(dataset):
    assert not {f["family"] for f in dataset.fonts} & set(fonts.PICTURE_FONTS)
    for font in dataset.fonts:
        assert font["package"] in fonts.DEBIAN_PACKAGES, font["file"]
        assert font["licence"].strip(), f"{font['file']} ({font['package']}) has no licence"
        assert font["family"] and font["style"], font["file"]
        assert 1 <= font["weight"] <= 1000 and isinstance(font["italic"], bool), font["file"]
        assert fonts.MIN_EM_PIXELS <= font["em_pixels"] <= fonts.EM_PIXELS, font["file"]


def test_cache_is_reused_and_checked(tmp_path):
    if not (DEJAVU / "DejaVuSans.ttf").is_file():
        pytest.skip(NO_DEJAVU)
    paths = [DEJAVU / "DejaVuSans.ttf", DEJAVU / "DejaVuSans-Bold.ttf"]
    lines = []
    first = fonts.load_fonts(tmp_path, paths=paths, log=lines.append)
    assert [f["family"] for f in first.fonts] == ["DejaVu Sans"] * 2 and any("cached" in l for l in lines)
    lines.clear()
    again = fonts.load_fonts(tmp_path, paths=paths, log=lines.append)
    assert not lines and (again.x == first.x).all()  # read from the cache, silently
    (tmp_path / fonts.FOLDER / "glyphs.npz").write_bytes(b"not the glyphs")
    rebuilt = fonts.load_fonts(tmp_path, paths=paths, log=lines.append)
    assert "SHA-256" in lines[0] and (rebuilt.x == first.x).all()


def test_no_fonts_is_one_clear_line(tmp_path):
    with pytest.raises(fonts.FontError) as error:
        fonts.find_font_files([tmp_path])
    assert "\n" not in str(error.value) and "make fonts" in str(error.value)


def test_tables_of_a_known_font():
    if not (DEJAVU / "DejaVuSans-Bold.ttf").is_file():
        pytest.skip(NO_DEJAVU)
    bold = fonts.read_tables(DEJAVU / "DejaVuSans-Bold.ttf")
    assert (bold["family"], bold["weight"], bold["bold"], bold["italic"]) == ("DejaVu Sans", 700, True, False)
    oblique = fonts.read_tables(DEJAVU / "DejaVuSans-Oblique.ttf")
    assert oblique["italic"] and oblique["weight"] == 400 and fonts.is_regular(oblique) is False
    assert not fonts.draws_symbols(DEJAVU / "DejaVuSans.ttf")
    for symbols in ("D050000L.otf", "StandardSymbolsPS.otf"):  # Zapf Dingbats' and Symbol's twins map A-Z too
        path = Path("/usr/share/fonts/opentype/urw-base35") / symbols
        if path.is_file():
            assert fonts.draws_symbols(path), path


def test_dejavu_bold_has_more_ink_than_regular():
    if not (DEJAVU / "DejaVuSans.ttf").is_file():
        pytest.skip(NO_DEJAVU)
    regular = fonts.render_font(DEJAVU / "DejaVuSans.ttf").astype(float)  # (62, 28, 28)
    bold = fonts.render_font(DEJAVU / "DejaVuSans-Bold.ttf").astype(float)
    ink_regular, ink_bold = regular.sum(axis=(1, 2)), bold.sum(axis=(1, 2))  # (62,)
    assert (ink_bold > 1.2 * ink_regular).all(), dict(zip(fonts.CHARACTERS, ink_bold / ink_regular))
    for glyphs in (regular, bold):  # one baseline: H and x stand on it, g and p go below it
        rows = {c: np.nonzero(glyphs[fonts.CHARACTERS.index(c)].sum(axis=1))[0] for c in "Hxgp"}
        assert rows["H"][-1] == rows["x"][-1] == fonts.BASELINE_ROW - 1
        assert rows["g"][-1] > fonts.BASELINE_ROW and rows["p"][-1] > fonts.BASELINE_ROW
        assert rows["H"][0] < rows["x"][0]  # the cap height above the x-height: the em's proportions kept
