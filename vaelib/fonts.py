"""A glyph dataset from the font files installed on this machine: A-Z, a-z and 0-9 of each font at 28 x 28.

Each font is rendered with Pillow (FreeType) at one scale for all its glyphs, set from its em square:
`EM_PIXELS` pixels per em (fewer only where the font's largest glyph would not fit), so that its weight,
x-height and width survive, as a type designer drew them. Every glyph sits on one common baseline
(`BASELINE_ROW`) and is centred horizontally on its ink. The manifest says, for each font, what its own
tables say (family, style, OS/2 weight class, italic), the Debian package that installed it and that
package's licence. Fonts that lack any of the 62 characters (or draw them as the .notdef box) are skipped.

The split is by family, never by face: a family (together with its widths, weights, optical sizes and any
family whose glyphs are near copies of its glyphs) lies wholly in training or wholly in held-out, chosen
by a hash of its name. So every bold face of a held-out family is unseen in training.

Where the cache lives: `glyphs.npz` (uint8 glyphs) and `manifest.json` (the fonts, the split, the glyphs'
SHA-256 and the list of font files it was built from) in `<root>/Fonts/` when a root is given, else in
$VAELIB_FONTS, else in `<data root>/Fonts/` (`data.data_root`). It is rebuilt when the installed font
files change. `make fonts` installs the Debian
packages (`fonts-*`) and builds it.

Introduced in: 13_fonts
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from . import data, files

CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"  # 62 glyphs per font
SIZE = 28  # pixels: the MNIST networks' images
EM_PIXELS = 22.0  # pixels per em: caps about 16 px tall, an x-height about 11 px, like MNIST's 20-px digits
MIN_EM_PIXELS = 14.0  # a font whose glyphs reach so far out of its em square that they fit only smaller: skipped
BASELINE_ROW = 21  # the baseline, from the top: 21 rows for ascenders, 7 for descenders
FONT_FOLDERS = ("/usr/share/fonts", "/usr/local/share/fonts")
FONT_SUFFIXES = (".ttf", ".otf")
HELD_OUT_PERCENT = 20  # share of the family groups held out, by a hash of the group's name
NEAR_COPY_RMS = 0.09  # families whose regular faces differ by less (RMS over 62 glyphs, [0, 1]) are one group:
# Hack and DejaVu Sans Mono differ by 0.063, FreeSans and Nimbus Sans by 0.082; distinct designs mostly by > 0.1
FORMAT = 4  # bumped when the rendering changes: a cache of another format is rebuilt
FOLDER = "Fonts"  # under the data root
ENV_VAR = "VAELIB_FONTS"  # the cache folder, where the data root is read-only (the Makefile sets ./data/Fonts)
# The Debian packages the dataset is built from (`make fonts` installs them): about 51 MB to download and
# 132 MB installed (apt-get, Debian 12). Fonts that other packages installed are left out, so that every
# machine with these packages builds the same dataset. Their sources and licences: the README, "Fonts".
DEBIAN_PACKAGES = (
    "fonts-adf-accanthis", "fonts-adf-baskervald", "fonts-adf-berenis", "fonts-adf-gillius",
    "fonts-adf-ikarius", "fonts-adf-irianis", "fonts-adf-libris", "fonts-adf-mekanus", "fonts-adf-oldania",
    "fonts-adf-romande", "fonts-adf-switzera", "fonts-adf-tribun", "fonts-adf-universalis", "fonts-adf-verana",
    "fonts-aenigma", "fonts-anonymous-pro", "fonts-averia-gwf", "fonts-averia-sans-gwf",
    "fonts-averia-serif-gwf", "fonts-b612", "fonts-cabin", "fonts-cantarell", "fonts-clear-sans",
    "fonts-comic-neue", "fonts-courier-prime", "fonts-dejavu-core", "fonts-dejavu-extra", "fonts-dosis",
    "fonts-ebgaramond", "fonts-firacode", "fonts-freefont-ttf", "fonts-gfs-artemisia", "fonts-gfs-didot",
    "fonts-gfs-neohellenic", "fonts-go", "fonts-hack", "fonts-inconsolata", "fonts-jetbrains-mono",
    "fonts-jura", "fonts-karla", "fonts-liberation2", "fonts-linuxlibertine", "fonts-lobster",
    "fonts-lobstertwo", "fonts-manrope", "fonts-mononoki", "fonts-oldstandard", "fonts-open-sans",
    "fonts-paratype", "fonts-play", "fonts-quicksand", "fonts-roboto-unhinted", "fonts-sil-andika",
    "fonts-sil-charis", "fonts-sil-gentium-basic", "fonts-stix", "fonts-tuffy", "fonts-urw-base35",
    "fonts-vollkorn",
)
MAKE_HINT = "run `make fonts` (as root, it installs Debian's fonts-* packages) or `apt-get install fonts-dejavu-core`"

# Fonts that map the Latin letters to pictures (stars, faces, patterns, bar codes), found by looking at the
# A and g of every font of DEBIAN_PACKAGES; fonts whose glyph names say so are caught by `draws_symbols`.
PICTURE_FONTS = ("90 Stars BRK", "Binary 01s BRK", "Binary X 01s BRK", "Code Of Life BRK", "Faux Snow BRK",
                 "Head-Ding Maker BRK", "Line Dings BRK", "Xmas Lights BRK")

# Words that name a width, weight or optical size rather than a design: removed from a family's name to
# group its faces ("DejaVu Sans Condensed" and "DejaVu Sans" are one family for the split).
_VARIANT_WORDS = re.compile(
    r"\b(condensed|semicondensed|semi ?condensed|narrow|extended|expanded|compressed|wide|caption|display|"
    r"text|sc|smallcaps|thin|hairline|extralight|extra ?light|ultralight|ultra ?light|light|book|regular|"
    r"medium|semibold|semi ?bold|demibold|demi ?bold|demi|bold|extrabold|extra ?bold|ultrabold|heavy|black|"
    r"std|pro|alt|style|titling|no ?\d+|\d+)\b")


class FontError(FileNotFoundError):
    """No usable font file is installed (or the cache is unreadable). The message says how to fix it."""


@dataclass
class FontGlyphs:
    """The dataset: `x` (F, 62, 784) float32 in [0, 1], one row of 62 glyphs per font, and its manifest.

    `fonts[i]` describes font i (family, style, weight, italic, bold, package, licence, split, ...);
    `characters[j]` is glyph j. `x[i, j].view(28, 28)` is an image. Introduced in: 13_fonts
    """
    x: torch.Tensor  # (F, 62, 784)
    fonts: list[dict]
    characters: str = CHARACTERS

    def split(self, name: str) -> "FontGlyphs":
        """The fonts of one side of the split: "train" or "held-out"."""
        if name not in ("train", "held-out"):
            raise ValueError(f"split must be 'train' or 'held-out', got {name!r}")
        keep = [i for i, font in enumerate(self.fonts) if font["split"] == name]
        return FontGlyphs(self.x[keep], [self.fonts[i] for i in keep], self.characters)


# --- finding fonts and reading their own tables -------------------------------------------------------

def find_font_files(folders=FONT_FOLDERS) -> list[Path]:
    """Every .ttf and .otf file under `folders`, sorted; FontError (one line) when there is none."""
    found = sorted({path for folder in folders if Path(folder).is_dir() for path in Path(folder).rglob("*")
                    if path.suffix.lower() in FONT_SUFFIXES and path.is_file()})
    if not found:
        raise FontError(f"no font files (.ttf, .otf) in {', '.join(map(str, folders))}: {MAKE_HINT}")
    return found


def _name(table, *ids: int) -> str:
    for name_id in ids:
        value = table.getDebugName(name_id)
        if value:
            return " ".join(value.split())
    return ""


def read_tables(path: Path) -> dict | None:
    """What the font file says of itself, or None if it cannot be read or lacks one of the 62 characters.

    family: the typographic family (name ID 16, else 1); style: its subfamily (17, else 2);
    weight: OS/2 usWeightClass (400 regular, 700 bold); italic and bold: OS/2 fsSelection bits 0 and 5,
    or head.macStyle bits 1 and 0 (the OpenType spec, "OS/2" and "head" tables).
    """
    from fontTools.ttLib import TTFont, TTLibError
    try:
        with TTFont(path, lazy=True, fontNumber=0) as font:
            cmap = font.getBestCmap() or {}
            if any(cmap.get(ord(c), ".notdef") == ".notdef" for c in CHARACTERS):
                return None  # not a Latin font: some letter would be the .notdef box
            names, head = font["name"], font["head"]
            os2 = font["OS/2"] if "OS/2" in font else None
            selection = os2.fsSelection if os2 is not None else 0
            return {
                "family": _name(names, 16, 1),
                "style": _name(names, 17, 2) or "Regular",
                "full_name": _name(names, 4),
                "weight": int(os2.usWeightClass) if os2 is not None else (700 if head.macStyle & 1 else 400),
                "italic": bool(selection & 1 or head.macStyle & 2),
                "bold": bool(selection & 32 or head.macStyle & 1),
                "units_per_em": int(head.unitsPerEm),
                "variable": "fvar" in font,
                "version": _name(names, 5),
            }
    except (TTLibError, KeyError, OSError, AssertionError, ValueError, struct.error):
        return None


def draws_symbols(path: Path) -> bool:
    """True where the glyph names say that the letters are other symbols: Symbol's "Alpha" at A (the
    Adobe Glyph List names another character), Zapf Dingbats' "a10" (its glyphs are named a1 to a191)."""
    from fontTools import agl
    from fontTools.ttLib import TTFont
    with TTFont(path, lazy=True, fontNumber=0) as font:
        cmap = font.getBestCmap() or {}
        names = [cmap[ord(c)].split(".")[0] for c in CHARACTERS]
    wrong = [name for c, name in zip(CHARACTERS, names)
             if re.fullmatch(r"a\d+", name) or agl.toUnicode(name) not in ("", c)]
    return len(wrong) > len(CHARACTERS) // 2


def group_name(family: str) -> str:
    """The family without its width, weight and size words, lower case: the unit of the split."""
    words = _VARIANT_WORDS.sub(" ", family.lower().replace("-", " "))
    return " ".join(words.split()) or family.lower()


def is_regular(font: dict) -> bool:
    return not font["italic"] and not font["bold"] and 350 <= font["weight"] <= 450


def is_bold(font: dict) -> bool:
    """An upright bold: weight class 700 (650-750), or the bold bit where the weight class says less."""
    return not font["italic"] and (650 <= font["weight"] <= 750 or (font["bold"] and font["weight"] < 650))


# --- where each file came from: the Debian package and its licence ------------------------------------

def debian_packages(paths: list[Path]) -> dict[Path, str]:
    """The Debian package that installed each file (`dpkg-query -S`), "" where none did or dpkg is absent."""
    owners = {}
    if shutil.which("dpkg-query") is None:
        return {path: "" for path in paths}
    for start in range(0, len(paths), 200):
        batch = paths[start:start + 200]
        asked = {str(p.resolve()): p for p in batch} | {str(p): p for p in batch}
        result = subprocess.run(["dpkg-query", "-S", *asked], capture_output=True, text=True)
        for line in result.stdout.splitlines():
            package, _, owned = line.partition(": ")
            if owned in asked and "," not in package:
                owners[asked[owned]] = package.split(":")[0]
    return {path: owners.get(path, "") for path in paths}


def package_licence(package: str) -> str:
    """The License field(s) of a package's upstream files in /usr/share/doc/<package>/copyright (DEP-5),
    without those of its debian/ folder; "" when the file is missing or says none."""
    copyright_file = Path("/usr/share/doc") / package / "copyright"
    if not package or not copyright_file.is_file():
        return ""
    licences = []
    for paragraph in re.split(r"\n\s*\n", copyright_file.read_text(errors="replace")):
        files_field = re.search(r"^Files:\s*(.*)$", paragraph, re.M)
        licence = re.search(r"^License:\s*(.+)$", paragraph, re.M)
        if files_field and licence and not files_field.group(1).strip().startswith("debian/"):
            if licence.group(1).strip() not in licences:
                licences.append(licence.group(1).strip())
    if not licences:  # not machine-readable: name the usual licences that it mentions
        text = copyright_file.read_text(errors="replace")
        for pattern, name in (("SIL Open Font License|OFL", "OFL-1.1"), ("GNU General Public License", "GPL"),
                              ("Apache License", "Apache-2.0"), ("LaTeX Project Public", "LPPL"),
                              ("public domain", "public-domain"), ("Bitstream Vera", "Bitstream-Vera")):
            if re.search(pattern, text, re.I):
                licences.append(name)
    return " / ".join(licences)


# --- rendering -----------------------------------------------------------------------------------------

def _font_at(path: Path, em_pixels: float) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), em_pixels)  # Pillow's size is pixels per em (fractional since 10.1)


def font_scale(path: Path, probe: float = 200.0) -> float:
    """Pixels per em for this font: EM_PIXELS, or less where its tallest, deepest or widest glyph would
    leave the 28 x 28 box (one scale for all its glyphs, so the proportions between them stay)."""
    font = _font_at(path, probe)
    boxes = np.array([font.getbbox(c, anchor="ls") for c in CHARACTERS], dtype=float) / probe  # in ems
    above, below = -boxes[:, 1].min(), boxes[:, 3].max()  # ink above and below the baseline
    width = (boxes[:, 2] - boxes[:, 0]).max()
    fits = min(BASELINE_ROW / max(above, 1e-6), (SIZE - BASELINE_ROW) / max(below, 1e-6), SIZE / max(width, 1e-6))
    em_pixels = min(EM_PIXELS, 0.98 * fits)
    while em_pixels >= MIN_EM_PIXELS and not _fits(_font_at(path, em_pixels)):  # hinting rounds outlines up
        em_pixels *= 0.97
    return em_pixels


def _fits(font: ImageFont.FreeTypeFont) -> bool:
    """Whether every glyph, drawn as `render_font` draws it, lies inside the 28 x 28 box."""
    for character in CHARACTERS:
        left, top, right, bottom = font.getbbox(character, anchor="ls")
        shift = round(SIZE / 2 - (left + right) / 2)
        if top + BASELINE_ROW < 0 or bottom + BASELINE_ROW > SIZE or left + shift < 0 or right + shift > SIZE:
            return False
    return True


def render_font(path: Path, em_pixels: float | None = None) -> np.ndarray:
    """The 62 glyphs of one font: (62, 28, 28) uint8, ink 255 on 0, on the common baseline."""
    em_pixels = font_scale(path) if em_pixels is None else em_pixels
    font = _font_at(path, em_pixels)
    glyphs = np.zeros((len(CHARACTERS), SIZE, SIZE), dtype=np.uint8)
    for j, character in enumerate(CHARACTERS):
        left, _, right, _ = font.getbbox(character, anchor="ls")
        image = Image.new("L", (SIZE, SIZE), 0)
        x = SIZE / 2 - (left + right) / 2  # centre the ink horizontally
        ImageDraw.Draw(image).text((round(x), BASELINE_ROW), character, fill=255, font=font, anchor="ls")
        glyphs[j] = np.asarray(image)  # (28, 28)
    return glyphs


def _tofu(path: Path, em_pixels: float) -> np.ndarray:
    """What the font draws for a character it lacks (U+FFFF is never a character): the .notdef box."""
    font = _font_at(path, em_pixels)
    image = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(image).text((SIZE // 2, BASELINE_ROW), "\uffff", fill=255, font=font, anchor="ms")
    return np.asarray(image)


# --- the split -----------------------------------------------------------------------------------------

def _hash_percent(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % 100


def near_copy_groups(fonts: list[dict], glyphs: np.ndarray) -> dict[str, str]:
    """Each group name -> the name of its union with every group whose regular face is a near copy.

    Derivatives of one design under other names (FreeSerif, STIX and Nimbus Roman; Hack and DejaVu Sans
    Mono) would otherwise put one design on both sides of the split. The union takes the smallest name,
    so the split is fixed by the set of fonts (DEBIAN_PACKAGES). glyphs: (F, 62, 28, 28) uint8.
    """
    groups = sorted({font["group"] for font in fonts})
    representative = {}
    for i, font in enumerate(fonts):  # the regular face of a group, else its first face
        if font["group"] not in representative or (is_regular(font) and not is_regular(fonts[representative[font["group"]]])):
            representative[font["group"]] = i
    rows = torch.from_numpy(glyphs[[representative[g] for g in groups]].reshape(len(groups), -1)).float() / 255
    rms = torch.cdist(rows, rows) / rows.shape[1] ** 0.5  # (G, G)
    parent = list(range(len(groups)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in torch.nonzero(torch.triu(rms < NEAR_COPY_RMS, diagonal=1)).tolist():
        parent[max(root(i), root(j))] = min(root(i), root(j))
    return {group: groups[root(k)] for k, group in enumerate(groups)}


def assign_split(fonts: list[dict], glyphs: np.ndarray) -> None:
    """Set each font's "split_group" and "split" ("train" or "held-out", by a hash of the group's name)."""
    union = near_copy_groups(fonts, glyphs)
    for font in fonts:
        font["split_group"] = union[font["group"]]
        font["split"] = "held-out" if _hash_percent(font["split_group"]) < HELD_OUT_PERCENT else "train"


# --- building and caching ------------------------------------------------------------------------------

def _sources(paths: list[Path]) -> list[list]:
    """(path, size, mtime) of each font file: the cache is rebuilt when this list changes."""
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def build(paths: list[Path] | None = None, packages=DEBIAN_PACKAGES, log=print) -> tuple[np.ndarray, list[dict], dict]:
    """Render every usable font: glyphs (F, 62, 28, 28) uint8, the manifest (F dicts) and the files
    left out, by reason.

    Only the fonts of `packages` where dpkg says which package installed a file (None: every font found).
    """
    paths = find_font_files() if paths is None else [Path(p) for p in paths]
    owners = debian_packages(paths)
    if packages is not None and any(owners.values()):
        paths = [path for path in paths if owners[path] in packages]
    licences = {}
    fonts, glyphs, seen = [], [], set()
    skipped = {"not Latin": [], "pictures, not letters": [], "duplicate": [], "empty or .notdef glyphs": [],
               "too tall or wide": []}
    for path in paths:
        tables = read_tables(path)
        if tables is None or not tables["family"]:
            skipped["not Latin"].append(str(path))
            continue
        if tables["family"] in PICTURE_FONTS or draws_symbols(path):
            skipped["pictures, not letters"].append(str(path))
            continue
        key = (tables["family"].lower(), tables["style"].lower())
        if key in seen:  # the same face from two packages (or as .ttf and .otf): the first one
            skipped["duplicate"].append(str(path))
            continue
        try:
            em_pixels = font_scale(path)
            if em_pixels < MIN_EM_PIXELS:
                skipped["too tall or wide"].append(str(path))
                continue
            rendered = render_font(path, em_pixels)  # (62, 28, 28)
            tofu = _tofu(path, em_pixels)
        except (OSError, ValueError):
            skipped["not Latin"].append(str(path))
            continue
        inked = rendered.reshape(len(CHARACTERS), -1).max(axis=1) > 0
        is_tofu = (rendered == tofu).all(axis=(1, 2)) & (tofu.max() > 0)
        if not inked.all() or is_tofu.any():
            skipped["empty or .notdef glyphs"].append(str(path))
            continue
        seen.add(key)
        package = owners[path]
        if package not in licences:
            licences[package] = package_licence(package) or ("see the font file" if not package else "")
        fonts.append({**tables, "file": str(path), "em_pixels": round(em_pixels, 3),
                      "group": group_name(tables["family"]), "package": package, "licence": licences[package]})
        glyphs.append(rendered)
    if not fonts:
        raise FontError(f"none of the {len(paths)} font files has all of A-Z, a-z and 0-9: {MAKE_HINT}")
    glyphs = np.stack(glyphs)  # (F, 62, 28, 28)
    assign_split(fonts, glyphs)
    log(f"{len(fonts)} Latin fonts from {len(paths)} files (skipped: "
        + ", ".join(f"{len(names)} {why}" for why, names in skipped.items()) + ")")
    return glyphs, fonts, skipped


def _npz_bytes(glyphs: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, glyphs=glyphs)
    return buffer.getvalue()


def cache_folder(root=None) -> Path:
    """`<root>/Fonts` for an explicit root, else $VAELIB_FONTS, else `<data root>/Fonts`."""
    if root is None and os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return data.data_root(root) / FOLDER


def load_fonts(root=None, rebuild: bool = False, paths=None, log=print) -> FontGlyphs:
    """The glyph dataset, from the cache under `<root>/Fonts/` when it matches the installed fonts, else
    rendered (a few seconds to a minute) and cached: glyphs.npz, checked against manifest.json's SHA-256.

    `paths`: these font files only (default: every installed one, of `DEBIAN_PACKAGES` where dpkg knows).

    >>> fonts = load_fonts(); train = fonts.split("train")   # train.x (F, 62, 784)
    Introduced in: 13_fonts
    """
    folder = cache_folder(root)
    paths = find_font_files() if paths is None else sorted(Path(p) for p in paths)
    sources = _sources(paths)
    manifest_path, glyphs_path = folder / "manifest.json", folder / "glyphs.npz"
    glyphs = None
    if not rebuild and manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (ValueError, OSError):
            manifest = {}  # half-written or unreadable: rendered again below
        if manifest.get("format") == FORMAT and manifest.get("sources") == sources:
            payload = files.read_verified(glyphs_path, manifest["sha256"], 1 << 30)
            if payload is not None:
                glyphs, fonts = np.load(io.BytesIO(payload))["glyphs"], manifest["fonts"]
            else:
                log(f"{glyphs_path} is missing or does not match its SHA-256: rendering the fonts again")
    if glyphs is None:
        started, cpu_started = time.perf_counter(), time.process_time()
        glyphs, fonts, skipped = build(paths, log=log)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        payload = _npz_bytes(glyphs)
        files.check_writable_folder(folder, "the font dataset")
        files.atomic_write_bytes(glyphs_path, payload)
        manifest = {"format": FORMAT, "characters": CHARACTERS, "size": SIZE, "em_pixels": EM_PIXELS,
                    "baseline_row": BASELINE_ROW, "sha256": hashlib.sha256(payload).hexdigest(),
                    "build_seconds": round(seconds, 1), "build_cpu_seconds": round(cpu_seconds, 1), "counts": counts(fonts), "fonts": fonts,
                    "skipped": skipped,
                    "sources": sources}
        files.atomic_write_bytes(manifest_path, json.dumps(manifest, indent=1).encode())
        log(f"cached {len(fonts)} fonts in {folder} ({len(payload) / 2**20:.1f} MiB) after {seconds:.1f} s ({cpu_seconds:.1f} s of CPU)")
    x = torch.from_numpy(glyphs.reshape(len(fonts), len(CHARACTERS), SIZE * SIZE)).float() / 255  # (F, 62, 784)
    return FontGlyphs(x, fonts)


def counts(fonts: list[dict]) -> dict:
    """Fonts, families, split groups and regular-bold pairs, overall and on each side of the split."""
    def pairs(chosen):
        families = {}
        for font in chosen:
            faces = families.setdefault(font["family"], [False, False])
            faces[0] |= is_regular(font)
            faces[1] |= is_bold(font)
        return sum(regular and bold for regular, bold in families.values())

    result = {"fonts": len(fonts), "families": len({f["family"] for f in fonts}),
              "split_groups": len({f["split_group"] for f in fonts}), "regular_bold_families": pairs(fonts),
              "packages": len({f["package"] for f in fonts})}
    for side in ("train", "held-out"):
        chosen = [f for f in fonts if f["split"] == side]
        result[side] = {"fonts": len(chosen), "families": len({f["family"] for f in chosen}),
                        "regular_bold_families": pairs(chosen)}
    return result


if __name__ == "__main__":  # python -m vaelib.fonts [--rebuild | --packages]: build the cache, print the counts
    import sys
    if "--packages" in sys.argv:
        sys.exit(print(" ".join(DEBIAN_PACKAGES)))
    try:
        dataset = load_fonts(rebuild="--rebuild" in sys.argv)
    except FontError as error:
        sys.exit(f"fonts: {error}")
    print(json.dumps(counts(dataset.fonts)))
