"""A walk over an upload's structure before Pillow sees it: refuse what would make it amplify.

Pillow does work in proportion to a file's structure inside `Image.open`, before any pixel
check can run: one Python object per JPEG segment before the scan, per PNG chunk, per GIF
extension, per TIFF strip; libwebp one record per animation frame; libheif follows every
item, reference and extent. A few MB of such structure cost hundreds of MB and seconds of
CPU (docs/reliability.md, "Decoding in bounded memory and time"). This module reads only
headers (lengths and counts, never pixels; C-speed `bytes` scans or at most MAX_BLOCKS
steps of Python) and refuses a file past any bound below. Real photos sit far below each.
"""
from __future__ import annotations

import struct

from PIL import PngImagePlugin

# Segments, chunks, extensions, frames, IFDs, items: what Pillow or a codec library keeps
# one record for. A phone JPEG has about 20 segments before its scan, a Google "portrait"
# JPEG with its depth map in extended XMP about 100; an iPhone HEIC about 60 items.
MAX_BLOCKS = 4096
# Bytes of metadata (ICC, XMP, EXIF, text, private chunks) a file may carry: the largest
# ICC printer profiles are a few MB, a depth map in extended XMP 2-6 MB.
MAX_METADATA_BYTES = 16 * 2**20
# An EXIF block is parsed into Python objects (a tuple of ints per array tag: 18x its
# bytes) to read the orientation. JPEG's own format caps EXIF at 64 KB.
MAX_EXIF_BYTES = 2**20
# PNG image-data chunks: Pillow reads each chunk's header in Python (libpng writes 8 KB
# chunks: 5,000 for a 40 MB file).
MAX_DATA_CHUNKS = 65536
# JPEG scans in the whole file: libjpeg walks every block of a progressive image once per
# scan (encoders write about 10; a multi-picture phone JPEG 2-3 pictures of about 10).
MAX_JPEG_SCANS = 100
# Start-of-frame markers of sequential Huffman JPEGs (baseline, extended): libjpeg reads one
# scan of them when that scan holds every component.
SEQUENTIAL_FRAMES = (0xC0, 0xC1)
# Strips or tiles of a TIFF: Pillow keeps one tile record each; never more than the
# image's geometry needs.
MAX_TIFF_BLOCKS = 65536
# Values in one numeric TIFF tag (strip offsets of a 65,535-row, 4-plane image).
MAX_TIFF_VALUES = 4 * 65536
# Memory a decoder needs per pixel, in units of Pillow's own 4-byte pixel, measured
# (docs/reliability.md): libwebp's animation decoder (Pillow's reader for every WebP)
# holds two RGBA canvases beside Pillow's copy; libavif and libheif a YUV and an RGB
# picture. MAX_IMAGE_PIXELS is divided by this for the format: 10 MP of WebP, 13 MP of
# AVIF, 25 MP of HEIC (an iPhone's 24 MP photo) at the default 40 MP.
PIXEL_COST = {"WEBP": 4, "AVIF": 3, "HEIF": 1.6}
# Pillow's own fence on decompressed PNG text (64 MB by default), brought to ours.
PngImagePlugin.MAX_TEXT_MEMORY = MAX_METADATA_BYTES


def _refuse(message: str, too_large: bool = False):
    # classifier.images imports this module, so its errors are looked up when needed.
    from classifier.images import ImageTooLarge, InvalidImage

    raise (ImageTooLarge if too_large else InvalidImage)(message)


class _Budget:
    """Counts blocks and metadata bytes for one file; refuses past the bounds."""

    def __init__(self, what: str):
        self.what, self.blocks, self.bytes = what, 0, 0

    def add(self, size: int = 0, blocks: int = 1) -> None:
        self.blocks += blocks
        self.bytes += size
        if self.blocks > MAX_BLOCKS:
            _refuse(f"The image has more than {MAX_BLOCKS} {self.what}; "
                    "this server reads at most that many.")
        if self.bytes > MAX_METADATA_BYTES:
            _refuse(f"The image carries more than {MAX_METADATA_BYTES >> 20} MB of metadata; "
                    "this server reads at most that much.", too_large=True)


def _exif(size: int) -> None:
    if size > MAX_EXIF_BYTES:
        _refuse(f"The image's EXIF block is {size >> 10} KB; this server reads at most "
                f"{MAX_EXIF_BYTES >> 10} KB.", too_large=True)


# ---------------------------------------------------------------- JPEG
def check_jpeg(data: bytes) -> None:
    """Segments before the first scan (Pillow lists each), and scans in the whole file.

    The scans are counted only where libjpeg would read a second one: a progressive image,
    or a sequential one whose first scan leaves out a component. A sequential first scan
    holding every component is the whole image (libjpeg stops at any further scan), and
    counting a 2 MB phone photo's scans took 1.7 ms of its request.
    """
    budget, pos, frame = _Budget("segments before its scan"), 2, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return  # not a marker: libjpeg reports the damage
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            budget.add()
            pos += 2
            continue
        if marker == 0xDA and frame is not None and pos + 4 < len(data) \
                and frame[0] in SEQUENTIAL_FRAMES and data[pos + 4] == frame[1]:
            return  # one sequential scan of every component
        if marker in (0xDA, 0xD9):  # start of scan, end of image
            break
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and pos + 9 < len(data):
            frame = (marker, data[pos + 9])  # start of frame: its kind and component count
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        budget.add(length)
        pos += 2 + length
    if data.count(b"\xff\xda", pos) > MAX_JPEG_SCANS:
        _refuse(f"The JPEG has more than {MAX_JPEG_SCANS} scans; "
                "this server decodes at most that many.")


# ---------------------------------------------------------------- PNG
_PNG_DATA = (b"IDAT", b"fdAT")


def check_png(data: bytes) -> None:
    """Every chunk's header: Pillow keeps private chunks, inflates text, parses EXIF."""
    budget, pos, data_chunks = _Budget("chunks"), 8, 0
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind in _PNG_DATA:
            data_chunks += 1
            if data_chunks > MAX_DATA_CHUNKS:
                _refuse(f"The PNG has more than {MAX_DATA_CHUNKS} image-data chunks; "
                        "this server reads at most that many.")
        else:
            budget.add(length)
            if kind == b"eXIf":
                _exif(length)
            if kind == b"IEND":
                return
        pos += 12 + length


# ---------------------------------------------------------------- GIF
def check_gif(data: bytes) -> None:
    """Extensions before the first frame (Pillow reads only that frame; the rest are
    never parsed): Pillow keeps every comment and application block."""
    if len(data) < 13:
        return
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    budget = _Budget("blocks before its first frame")
    while pos < len(data) and data[pos] == 0x21:  # an extension
        pos += 2
        while pos < len(data) and data[pos]:  # its sub-blocks
            budget.add(data[pos])
            pos += 1 + data[pos]
        budget.add()
        pos += 1


# ---------------------------------------------------------------- WebP
def check_webp(data: bytes) -> None:
    """RIFF chunks: libwebp's demuxer keeps a record per animation frame."""
    budget, pos = _Budget("chunks or frames"), 12
    end = min(len(data), 8 + int.from_bytes(data[4:8], "little"))
    while pos + 8 <= end:
        kind = data[pos:pos + 4]
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        budget.add(0 if kind in (b"VP8 ", b"VP8L", b"ANMF", b"ALPH") else size)
        if kind == b"EXIF":
            _exif(size)
        pos += 8 + size + (size & 1)


# ---------------------------------------------------------------- TIFF
_TIFF_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
               13: 4, 16: 8, 17: 8, 18: 8}
_BYTE_TYPES = (1, 2, 6, 7)  # kept as bytes; the others become tuples of Python numbers
_STRIPS, _TILES = (273, 279), (324, 325)


def check_tiff(data: bytes) -> None:
    """Each IFD's tags: value counts, and strips or tiles against the image's size."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"\x00\x2b", b"\x2b\x00")  # BigTIFF
    head, entry, count_size = ("Q", 20, 8) if big else ("I", 12, 2)
    try:
        (offset,) = struct.unpack_from(order + head, data, 8 if big else 4)
        budget, seen = _Budget("TIFF directories and tags"), set()
        while offset and offset not in seen:
            seen.add(offset)
            (tags,) = struct.unpack_from(order + ("Q" if big else "H"), data, offset)
            budget.add(blocks=1 + tags)
            fields = {}
            for i in range(tags):
                at = offset + count_size + i * entry
                tag, kind, count = struct.unpack_from(order + "HH" + head, data, at)
                size = _TIFF_SIZES.get(kind, 1) * count
                budget.add(size if kind in _BYTE_TYPES else 0, blocks=0)
                if kind not in _BYTE_TYPES and count > MAX_TIFF_VALUES:
                    _refuse(f"The TIFF tag {tag} holds {count} values; "
                            f"this server reads at most {MAX_TIFF_VALUES}.")
                fields[tag] = (kind, count, at + 4 + (8 if big else 4))
            _check_tiff_blocks(data, order, fields)
            (offset,) = struct.unpack_from(order + head, data,
                                           offset + count_size + tags * entry)
    except struct.error:
        return  # cut short: Pillow says what is wrong


def _tiff_value(data: bytes, order: str, field, default: int) -> int:
    if field is None:
        return default
    kind, count, at = field
    if count != 1:
        return default
    fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)
    return struct.unpack_from(order + fmt, data, at)[0] if fmt else default


def _check_tiff_blocks(data: bytes, order: str, fields: dict) -> None:
    width = _tiff_value(data, order, fields.get(256), 0)
    height = _tiff_value(data, order, fields.get(257), 0)
    planes = max(1, _tiff_value(data, order, fields.get(277), 1)) \
        if _tiff_value(data, order, fields.get(284), 1) == 2 else 1
    if 324 in fields or 322 in fields:
        tile_w = max(1, _tiff_value(data, order, fields.get(322), 1))
        tile_h = max(1, _tiff_value(data, order, fields.get(323), 1))
        needed = -(-width // tile_w) * -(-height // tile_h) * planes
        tags = _TILES
    else:
        rows = max(1, min(_tiff_value(data, order, fields.get(278), 2**32 - 1), height or 1))
        needed = -(-max(height, 1) // rows) * planes
        tags = _STRIPS
    for tag in tags:
        if tag in fields and fields[tag][1] > min(max(needed, 1), MAX_TIFF_BLOCKS):
            _refuse(f"The TIFF lists {fields[tag][1]} strips or tiles where its "
                    f"{width}x{height} pixels need {needed}.")


# ---------------------------------------------------------------- HEIF / AVIF
_CONTAINERS = (b"meta", b"iprp", b"ipco", b"dinf", b"moov", b"trak", b"mdia", b"minf")


def check_isobmff(data: bytes, max_pixels: int) -> None:
    """HEIC and AVIF boxes: items, references, and every coded picture's size (a grid may
    name a small output over tiles of any size, or over one tile a thousand times)."""
    budget = _Budget("items, references or properties")
    properties, item_properties, references = [], {}, {}
    for parent, kind, body in _boxes(data, 0, len(data), budget):
        if parent == b"ipco":
            properties.append(struct.unpack_from(">II", body, 4) if kind == b"ispe"
                              and len(body) >= 12 else (0, 0))
        elif kind == b"ipma":
            item_properties = _associations(body)
        elif kind == b"iinf" and len(body) >= 6:
            budget.add(blocks=struct.unpack_from(">H" if body[0] == 0 else ">I", body, 4)[0])
        elif kind == b"iref":
            references = _references(body, budget)
        elif kind == b"iloc" and _extent_bytes(body) > len(data):
            _refuse("The image's items read more bytes than the file holds "
                    "(the same data used twice).")
    pixels = 0
    for item, indices in item_properties.items():
        for index in indices:
            if 0 < index <= len(properties):
                width, height = properties[index - 1]
                pixels += width * height * max(1, references.get(item, 0))
    if pixels > 3 * max_pixels:
        _refuse(f"The image's coded pictures hold {pixels / 1e6:.0f} MP in all; this server "
                f"decodes at most {3 * max_pixels / 1e6:.0f} MP for one upload.", too_large=True)


def _boxes(data: bytes, start: int, end: int, budget: _Budget, parent: bytes = b""):
    """(parent type, type, body) of every box, descending into those that hold items."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1 and pos + 16 <= end:
            size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        box_end = min(end, pos + size)
        budget.add()
        body_at = pos + header + (4 if kind == b"meta" else 0)  # meta is a full box
        if kind in _CONTAINERS:
            yield from _boxes(data, body_at, box_end, budget, kind)
        elif kind != b"mdat":
            yield parent, kind, data[body_at:box_end]
        pos = box_end


def _associations(body: bytes) -> dict[int, list[int]]:
    """ipma: item id -> the 1-based indices of its properties in ipco."""
    version, wide = body[0], body[3] & 1
    out, pos = {}, 8
    try:
        for _ in range(struct.unpack_from(">I", body, 4)[0]):
            item, pos = _read(body, pos, 2 if version < 1 else 4)
            count, pos = _read(body, pos, 1)
            indices = []
            for _ in range(count):
                value, pos = _read(body, pos, 2 if wide else 1)
                indices.append(value & (0x7FFF if wide else 0x7F))
            out[item] = indices
    except (IndexError, struct.error):
        pass
    return out


def _references(body: bytes, budget: _Budget) -> dict[int, int]:
    """iref: item id -> how many times other items refer to it (a grid to its tiles)."""
    id_size = 2 if body[:1] == b"\x00" else 4
    counts, pos = {}, 4
    while pos + 8 <= len(body):
        size = struct.unpack_from(">I", body, pos)[0]
        if size < 8:
            break
        try:
            count, at = _read(body, pos + 8 + id_size, 2)
            budget.add(blocks=count)
            for _ in range(count):
                item, at = _read(body, at, id_size)
                counts[item] = counts.get(item, 0) + 1
        except IndexError:
            break
        pos += size
    return counts


def _extent_bytes(body: bytes) -> int:
    """The sum of every item's extent lengths in an iloc box (0 when it cannot be read)."""
    try:
        version = body[0]
        sizes = body[4] << 8 | body[5]
        offset_size, length_size = sizes >> 12, (sizes >> 8) & 15
        base_size, index_size = (sizes >> 4) & 15, (sizes & 15) if version in (1, 2) else 0
        pos = 6
        count, pos = _read(body, pos, 2 if version < 2 else 4)
        total = 0
        for _ in range(count):
            pos += 2 if version < 2 else 4  # item id
            pos += 2 if version in (1, 2) else 0  # construction method
            pos += 2 + base_size  # data reference index, base offset
            extents, pos = _read(body, pos, 2)
            for _ in range(extents):
                pos += index_size + offset_size
                length, pos = _read(body, pos, length_size)
                total += length
        return total
    except (IndexError, struct.error):
        return 0


def _read(body: bytes, pos: int, size: int) -> tuple[int, int]:
    if pos + size > len(body):
        raise IndexError(pos)
    return int.from_bytes(body[pos:pos + size], "big"), pos + size


# ---------------------------------------------------------------- dispatch
def check_structure(data: bytes, max_pixels: int) -> None:
    """Refuse (InvalidImage or ImageTooLarge) a file whose structure would make its
    decoder amplify; formats without such structure pass untouched."""
    head = data[:16]
    if head[:3] == b"\xff\xd8\xff":
        check_jpeg(data)
    elif head[:8] == b"\x89PNG\r\n\x1a\n":
        check_png(data)
    elif head[:4] in (b"GIF8",):
        check_gif(data)
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        check_webp(data)
    elif head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        check_tiff(data)
    elif head[4:8] == b"ftyp":
        check_isobmff(data, max_pixels)


def check_opened(info: dict) -> None:
    """Metadata a reader collected in `info` (EXIF, ICC, XMP), before any of it is parsed."""
    _exif(len(info.get("exif") or b""))
    carried = sum(len(info.get(key) or b"") for key in ("icc_profile", "xmp", "exif"))
    if carried > MAX_METADATA_BYTES:
        _refuse(f"The image carries more than {MAX_METADATA_BYTES >> 20} MB of metadata; "
                "this server reads at most that much.", too_large=True)
