"""A contact sheet of duplicate groups: one row per group, its posters as labelled thumbnails,
so a person can check a whole collection's duplicates at a glance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from postergenre.atomic import atomic_path
from postergenre.curation.duplicates import DuplicateGroup
from postergenre.data.decode import decode_poster
from postergenre.errors import PosterDecodeError, UserError

SHEET_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
THUMB_W, THUMB_H = 120, 178
HEADER_W = 150
LABEL_H = 34
PAD = 8
MAX_ROWS = 50
MAX_PER_ROW = 8
MIN_WIDTH = 560  # room for the note under the last row
BACKGROUND = (245, 245, 245)
INK = (20, 20, 20)
MUTED = (110, 110, 110)


def sheet_format(path: Path) -> str:
    """The image format a sheet at `path` is written in, or a `UserError`."""
    fmt = SHEET_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UserError(
            f"cannot write a contact sheet to {path}",
            hint="name a .png, .jpg or .jpeg file",
        )
    return fmt


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """`text` shortened with an ellipsis until it fits `width` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _thumbnail(path: str) -> Image.Image:
    tile = Image.new("RGB", (THUMB_W, THUMB_H), (200, 200, 200))
    try:
        image = decode_poster(path, fit=(THUMB_W, THUMB_H))
    except PosterDecodeError:
        ImageDraw.Draw(tile).text((8, THUMB_H // 2), "unreadable", fill=INK, font=_font(12))
        return tile
    image.thumbnail((THUMB_W, THUMB_H), Image.Resampling.LANCZOS)
    tile.paste(image, ((THUMB_W - image.width) // 2, (THUMB_H - image.height) // 2))
    return tile


def render_sheet(
    groups: Sequence[DuplicateGroup], max_rows: int = MAX_ROWS, per_row: int = MAX_PER_ROW
) -> Image.Image:
    """The sheet as an image: at most `max_rows` groups and `per_row` posters of each, with a
    note for what was left out."""
    shown = list(groups[:max_rows])
    columns = max([min(len(g.members), per_row) for g in shown], default=1)
    row_h = THUMB_H + LABEL_H + PAD
    left_out = len(groups) - len(shown)
    note_h = 30 if left_out or not groups else 0
    width = max(HEADER_W + columns * (THUMB_W + PAD) + PAD, MIN_WIDTH)
    sheet = Image.new("RGB", (width, PAD + len(shown) * row_h + note_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    big, small = _font(14), _font(11)
    for r, group in enumerate(shown):
        top = PAD + r * row_h
        draw.text((PAD, top + 4), f"#{r + 1}  {group.kind}", fill=INK, font=big)
        draw.text(
            (PAD, top + 24), f"lowest similarity {group.similarity:.3f}", fill=MUTED, font=small
        )
        draw.text((PAD, top + 40), f"{len(group.members)} posters", fill=MUTED, font=small)
        for c, member in enumerate(group.members[:per_row]):
            left = HEADER_W + c * (THUMB_W + PAD)
            sheet.paste(_thumbnail(member.path), (left, top))
            label = _fit(member.name, small, THUMB_W)
            draw.text((left, top + THUMB_H + 3), label, fill=INK, font=small)
            size = f"{member.width}x{member.height}" if member.width else ""
            draw.text((left, top + THUMB_H + 18), size, fill=MUTED, font=small)
        if len(group.members) > per_row:
            more = f"+{len(group.members) - per_row} more"
            draw.text((HEADER_W - 4 - small.getlength(more), top + 56), more, fill=INK, font=small)
    if left_out:
        groups_word = "group" if left_out == 1 else "groups"
        note = f"... and {left_out} more {groups_word} not shown (see --json or --csv for all)"
        draw.text((PAD, PAD + len(shown) * row_h + 6), note, fill=INK, font=big)
    elif not groups:
        draw.text((PAD, PAD + 6), "no duplicates found", fill=INK, font=big)
    return sheet


def write_sheet(
    groups: Sequence[DuplicateGroup],
    path: Path,
    max_rows: int = MAX_ROWS,
    per_row: int = MAX_PER_ROW,
) -> Path:
    """Render the sheet and write it to `path` (.png or .jpg) atomically."""
    fmt = sheet_format(path)
    image = render_sheet(groups, max_rows, per_row)
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return Path(path)
