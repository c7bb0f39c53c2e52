"""Deterministic synthetic instance-segmentation data in COCO format.

Each image is a textured background with a few solid-coloured shapes (ellipses, rotated
rectangles, random convex polygons, stars). Many shapes are placed so that they touch or
overlap an earlier one, sometimes with the same colour, so that only shape and position
separate the instances: the case that instance-sensitive score maps exist for.

Annotations describe exactly what is visible. Shapes are composited in painter's order and
the image is rendered from the final ownership map, so a pixel has an object's colour if and
only if it belongs to that object's mask. Ordinary objects are stored as polygons that
pycocotools rasterises back to the same pixels; crowd clumps are stored as uncompressed RLE.

Only ``numpy.random.Generator`` supplies randomness and images are written as PNG, so a
(split, num_images, seed, params) tuple always gives byte-identical files.

This module only computes (no file I/O); :mod:`.synthetic_splits` writes the splits.
"""
import cv2
import numpy as np

__all__ = ["GENERATOR_VERSION", "CATEGORIES"]

# Bump whenever the output for a given seed changes; stale datasets are then regenerated.
GENERATOR_VERSION = "2"  # 2: category ids are shape kinds (images unchanged)

_BACKGROUND = -1
_CROWD = -2
_SHAPES = ("ellipse", "rectangle", "polygon", "star")
# Each shape kind is a category (ids 1..4, in _SHAPES order), so that a model can be trained on
# some kinds and scored on the others (open-world proposals); crowd clumps of small round blobs
# are category 5. Category-agnostic users see the same masks as before.
CATEGORIES = [{"id": i + 1, "name": kind, "supercategory": "shape"} for i, kind in enumerate(_SHAPES)]
CATEGORIES.append({"id": len(_SHAPES) + 1, "name": "blob_clump", "supercategory": "crowd"})
_CROWD_CATEGORY_ID = CATEGORIES[-1]["id"]


# --------------------------------------------------------------------------------------
# Rendering helpers
# --------------------------------------------------------------------------------------
def _random_bgr(rng, sat=(60, 255), val=(60, 255)):
    hsv = np.array(
        [[[rng.integers(0, 180), rng.integers(sat[0], sat[1] + 1), rng.integers(val[0], val[1] + 1)]]],
        dtype=np.uint8,
    )
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _grating(rng, h, w, period_range):
    """A sine or square-wave grating in [-1, 1] with random orientation and phase."""
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(*period_range)
    phase = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    wave = np.sin((xs * np.cos(theta) + ys * np.sin(theta)) * (2 * np.pi / period) + phase)
    if rng.random() < 0.4:
        wave = np.sign(wave)
    return wave.astype(np.float32)


def _smooth_noise(rng, h, w, cells):
    """Low-frequency noise: a coarse random grid upsampled bicubically."""
    coarse = rng.standard_normal((cells[0], cells[1], 3)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def _background(rng, h, w):
    """Smooth colour gradient plus optional stripes and blotches (float32 BGR)."""
    grid = rng.integers(2, 6, size=2)
    corners = np.stack([_random_bgr(rng, sat=(0, 200)) for _ in range(grid[0] * grid[1])])
    img = cv2.resize(corners.reshape(grid[0], grid[1], 3), (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.6:
        stripe_colour = rng.uniform(-1, 1, size=3).astype(np.float32)
        amp = rng.uniform(10, 40)
        img += amp * _grating(rng, h, w, (6, 40))[..., None] * stripe_colour
    if rng.random() < 0.5:
        img += rng.uniform(10, 35) * _smooth_noise(rng, h, w, rng.integers(6, 24, size=2))
    return img


def _shape_polygon(rng, kind, size):
    """Vertices (N, 2) of a shape centred near the origin whose longer extent is ``size``."""
    angle = rng.uniform(0, 2 * np.pi)
    if kind == "ellipse":
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        pts = np.stack([np.cos(t), rng.uniform(0.4, 1.0) * np.sin(t)], 1)
    elif kind == "rectangle":
        aspect = rng.uniform(0.3, 1.0)
        pts = np.array([[-1, -aspect], [1, -aspect], [1, aspect], [-1, aspect]], dtype=np.float64)
    elif kind == "polygon":
        n = int(rng.integers(3, 8))
        # Gaps bounded below keep triangles from degenerating into slivers.
        gaps = rng.uniform(0.5, 1.5, size=n)
        t = np.cumsum(gaps / gaps.sum() * 2 * np.pi)
        r = rng.uniform(0.8, 1.0, size=n)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    else:  # star
        n = int(rng.integers(4, 8))
        t = np.arange(2 * n) * (np.pi / n)
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, rng.uniform(0.4, 0.65))
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ rot.T
    extent = (pts.max(0) - pts.min(0)).max()
    return pts * (size / extent)


def _rasterize(pts):
    """Local mask (uint8) of a polygon, placed so that its bounding box starts at (1, 1)."""
    pts = pts - pts.min(0) + 1.0
    w, h = np.ceil(pts.max(0)).astype(int) + 2
    mask = np.zeros((h, w), np.uint8)
    # 4 fractional bits: sub-pixel vertices keep small shapes from snapping to the grid.
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask


def _object_colour(rng, mask, base):
    """Colour field over a local mask: base colour, gentle shading and optional stripes."""
    h, w = mask.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (xs * np.cos(theta) + ys * np.sin(theta)) / max(h, w) - 0.5
    field = base + rng.uniform(0, 30) * ramp[..., None]
    if rng.random() < 0.25:
        field = field + rng.uniform(6, 18) * _grating(rng, h, w, (4, 14))[..., None]
    return field.astype(np.float32)


class _Canvas:
    """Ownership map of one image; objects are pasted in painter's order."""

    def __init__(self, h, w):
        self.h, self.w = h, w
        self.owner = np.full((h, w), _BACKGROUND, np.int16)

    def window(self, x0, y0, mask):
        """Image slice and local-mask slice of a mask whose top-left is (x0, y0)."""
        mh, mw = mask.shape
        ix0, iy0 = max(x0, 0), max(y0, 0)
        ix1, iy1 = min(x0 + mw, self.w), min(y0 + mh, self.h)
        if ix0 >= ix1 or iy0 >= iy1:
            return None
        return (slice(iy0, iy1), slice(ix0, ix1)), (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))


def _has_hole(mask):
    """True if ``mask`` encloses non-mask pixels (polygons cannot represent holes)."""
    padded = np.pad((mask == 0).astype(np.uint8), 1, constant_values=1)
    # Mask pixels connect 8-ways (as in cv2.findContours), so gaps connect only 4-ways.
    n, _ = cv2.connectedComponents(padded, connectivity=4)
    return n > 2


def _mask_overlaps(mask_a, xy_a, mask_b, xy_b):
    """Whether two local masks at integer offsets share a pixel."""
    (ax, ay), (bx, by) = xy_a, xy_b
    x0, y0 = max(ax, bx), max(ay, by)
    x1 = min(ax + mask_a.shape[1], bx + mask_b.shape[1])
    y1 = min(ay + mask_a.shape[0], by + mask_b.shape[0])
    if x0 >= x1 or y0 >= y1:
        return False
    a = mask_a[y0 - ay : y1 - ay, x0 - ax : x1 - ax]
    b = mask_b[y0 - by : y1 - by, x0 - bx : x1 - bx]
    return bool(np.any(a & b))


def _touching_offset(rng, anchor, mask, overlap):
    """Top-left for ``mask`` so that it touches (or overlaps) the ``anchor`` object.

    Slides the new mask towards the anchor's centre along a random direction and bisects for
    the first integer step where they stop intersecting. Consecutive steps move the mask by
    at most one pixel per axis, so at that step the two masks are 8-adjacent.
    """
    amask, (ax, ay) = anchor["mask"], anchor["xy"]
    acx, acy = ax + amask.shape[1] / 2, ay + amask.shape[0] / 2
    half_w, half_h = mask.shape[1] / 2, mask.shape[0] / 2
    theta = rng.uniform(0, 2 * np.pi)
    d = np.array([np.cos(theta), np.sin(theta)])

    def xy(t):
        return int(round(acx + t * d[0] - half_w)), int(round(acy + t * d[1] - half_h))

    lo = 0
    hi = int(np.ceil(np.hypot(*amask.shape) / 2 + np.hypot(*mask.shape) / 2)) + 2
    if not _mask_overlaps(amask, (ax, ay), mask, xy(lo)):
        return None
    while hi - lo > 1:  # invariant: overlap at lo, none at hi
        mid = (lo + hi) // 2
        if _mask_overlaps(amask, (ax, ay), mask, xy(mid)):
            lo = mid
        else:
            hi = mid
    if overlap:
        return xy(max(0, hi - int(round(rng.uniform(0.15, 0.5) * max(mask.shape)))))
    return xy(hi)


# --------------------------------------------------------------------------------------
# One image
# --------------------------------------------------------------------------------------
def _crowd_layer(rng, canvas, image):
    """Paint a clump of small blobs; returns the crowd region's mask or None."""
    h, w = canvas.h, canvas.w
    for _ in range(10):
        radius = rng.uniform(20, 50)
        cx, cy = rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)
        n = int(rng.integers(12, 40))
        centres = rng.normal(0, radius / 2.5, size=(n, 2)) + (cx, cy)
        blobs = np.zeros((h, w), np.uint8)
        colours = np.zeros((h, w, 3), np.float32)
        palette = [_random_bgr(rng) for _ in range(int(rng.integers(1, 4)))]
        for (bx, by), r in zip(centres, rng.uniform(2.5, 7, size=n)):
            blob = np.zeros((h, w), np.uint8)
            centre = (int(round(bx * 16)), int(round(by * 16)))
            cv2.circle(blob, centre, int(round(r * 16)), 1, -1, cv2.LINE_8, shift=4)
            colours[blob > 0] = palette[int(rng.integers(len(palette)))]
            blobs |= blob
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
        region = cv2.morphologyEx(blobs, cv2.MORPH_CLOSE, kernel) | blobs
        if region.sum() >= 400:
            sel = blobs > 0
            image[sel] = colours[sel]
            canvas.owner[region > 0] = _CROWD
            return region.astype(bool)
    return None


def _place_objects(rng, canvas, image, num_objects, size_range, crowd_area):
    """Paint up to ``num_objects`` shapes; returns their records (some may end up hidden)."""
    objects = []
    h, w = canvas.h, canvas.w
    max_size = min(size_range[1], 0.8 * min(h, w))
    for k in range(num_objects):
        size = float(np.exp(rng.uniform(np.log(size_range[0]), np.log(max_size))))
        kind = _SHAPES[int(rng.integers(len(_SHAPES)))]
        mask = _rasterize(_shape_polygon(rng, kind, size))
        base = _random_bgr(rng)
        mode = "random" if not objects else rng.choice(["random", "touch", "overlap"], p=[0.3, 0.4, 0.3])
        for _attempt in range(6):
            same_colour = False
            if mode == "random" or _attempt >= 4:
                cx, cy = rng.uniform(0, w), rng.uniform(0, h)
                xy = (int(round(cx - mask.shape[1] / 2)), int(round(cy - mask.shape[0] / 2)))
            else:
                anchor = objects[int(rng.integers(len(objects)))]
                xy = _touching_offset(rng, anchor, mask, overlap=(mode == "overlap"))
                if xy is None:
                    continue
                same_colour = rng.random() < 0.3
            win = canvas.window(xy[0], xy[1], mask)
            if win is None:
                continue
            (img_sl, loc_sl) = win
            local = mask[loc_sl] > 0
            # Mostly off-image shapes teach little; require most of it inside.
            if local.sum() < 0.5 * mask.sum():
                continue
            before = canvas.owner[img_sl].copy()
            canvas.owner[img_sl][local] = k
            touched = {int(v) for v in np.unique(before[local]) if v >= 0}
            ok = all(not _has_hole(canvas.owner == j) for j in touched)
            if ok and crowd_area:
                ok = np.count_nonzero(canvas.owner == _CROWD) >= 0.6 * crowd_area
            if not ok:
                canvas.owner[img_sl] = before
                continue
            colour = anchor["base"] if same_colour else base
            field = _object_colour(rng, mask, colour)
            image[img_sl][local] = field[loc_sl][local]
            objects.append({"mask": mask, "xy": xy, "base": colour, "owner": k,
                            "category_id": _SHAPES.index(kind) + 1})
            break
    return objects


def _polygons(mask):
    """COCO polygons that pycocotools rasterises back to exactly ``mask``.

    Contours traced on the 2x-upsampled mask run a quarter pixel inside the pixel edges, so
    every mask pixel's centre is inside and every other pixel's centre is outside.
    """
    ys, xs = np.nonzero(mask)
    x0, y0 = xs.min(), ys.min()
    crop = mask[y0 : ys.max() + 1, x0 : xs.max() + 1].astype(np.uint8)
    up = np.repeat(np.repeat(crop, 2, 0), 2, 1)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) < 3:
            continue
        pts = (c.reshape(-1, 2).astype(np.float64) + 0.5) / 2 + (x0, y0)
        polys.append(pts.ravel().tolist())
    return polys


def _uncompressed_rle(mask):
    """COCO uncompressed RLE (column-major run lengths, starting with a zero run)."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def _clean(mask, min_fragment_area):
    """Drop connected pieces smaller than ``min_fragment_area`` (slivers left by occlusion)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_fragment_area
    return keep[labels]


def _render_image(rng, height, width, kind, params):
    """Synthesise one image; returns (BGR uint8 image, [(mask, iscrowd, category_id), ...])."""
    canvas = _Canvas(height, width)
    background = _background(rng, height, width)
    image = background.copy()
    crowd = _crowd_layer(rng, canvas, image) if kind == "crowd" else None
    crowd_area = int(crowd.sum()) if crowd is not None else 0
    objects = []
    if kind != "empty":
        n = int(rng.integers(params["min_objects"], params["max_objects"] + 1))
        objects = _place_objects(rng, canvas, image, n, params["object_size"], crowd_area)

    instances = []
    unowned = np.zeros((height, width), bool)
    category_of_owner = {o["owner"]: o["category_id"] for o in objects}
    for k in range(len(objects)):
        visible = canvas.owner == k
        kept = _clean(visible, params["min_fragment_area"])
        if kept.sum() < params["min_visible_area"]:
            kept[:] = False
        unowned |= visible & ~kept
        if kept.any():
            instances.append((kept, 0, category_of_owner[k]))
    if crowd is not None:
        visible = canvas.owner == _CROWD
        if visible.any():
            instances.insert(0, (visible, 1, _CROWD_CATEGORY_ID))
    # Pixels of dropped objects and slivers revert to background, so that every painted
    # object pixel is annotated.
    image[unowned] = background[unowned]
    image += rng.uniform(2, 10) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), instances


# --------------------------------------------------------------------------------------
# Split parameters
# --------------------------------------------------------------------------------------
def _params(min_size=192, max_size=320, min_objects=1, max_objects=8, object_size=(24, 200),
            crowd_fraction=0.1, empty_fraction=0.07, min_visible_area=64, min_fragment_area=16):
    if not 0 < min_size <= max_size:
        raise ValueError(f"need 0 < min_size <= max_size, got {min_size}, {max_size}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    if not 0 <= crowd_fraction + empty_fraction <= 1:
        raise ValueError("crowd_fraction + empty_fraction must lie in [0, 1]")
    return {
        "min_size": int(min_size), "max_size": int(max_size),
        "min_objects": int(min_objects), "max_objects": int(max_objects),
        "object_size": [float(object_size[0]), float(object_size[1])],
        "crowd_fraction": float(crowd_fraction), "empty_fraction": float(empty_fraction),
        "min_visible_area": int(min_visible_area), "min_fragment_area": int(min_fragment_area),
    }


def _image_kinds(num_images, seed, params):
    """'empty' / 'crowd' / 'plain' per image, with exact (rounded) quotas for small splits."""
    rng = np.random.default_rng([seed, 0])
    n_empty = int(round(num_images * params["empty_fraction"]))
    n_crowd = int(round(num_images * params["crowd_fraction"]))
    kinds = np.array(["plain"] * num_images, dtype=object)
    order = rng.permutation(num_images)
    kinds[order[:n_empty]] = "empty"
    kinds[order[n_empty : n_empty + n_crowd]] = "crowd"
    return kinds.tolist()
