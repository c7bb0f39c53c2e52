"""Pictures of segment proposals: overlays drawn with detectron2's ``Visualizer``.

Colour convention: :func:`draw_proposals` takes a **BGR** image (as ``cv2.imread`` and
``read_image(path, format="BGR")`` give) and returns an **RGB** image (as ``Visualizer``
draws, ready for matplotlib / PIL). Write it with ``cv2.imwrite(path, rgb[:, :, ::-1])``.
:func:`side_by_side` takes and returns RGB.
"""
import colorsys

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch

from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, Visualizer

from .evaluation.export import to_numpy
from .mask_rendering import proposal_bitmasks, proposal_rles

__all__ = ["best_proposal_per_object", "draw_best_per_object", "draw_proposals", "proposal_colors", "side_by_side"]


def _palette():
    """detectron2's colormap (RGB in [0, 1]) without its greys, black and white."""
    colours = colormap(rgb=True, maximum=1)
    keep, seen = [], set()
    for c in colours:  # the colormap repeats a few entries: keep the first of each
        key = tuple(np.round(c, 3))
        if colorsys.rgb_to_hsv(*c)[1] > 0.35 and max(c) > 0.3 and key not in seen:
            seen.add(key)
            keep.append(c)
    return np.asarray(keep, dtype=np.float64)


_PALETTE = _palette()


def proposal_colors(n):
    """``n`` distinct RGB colours in [0, 1], the same for the same rank in every picture.

    The first ones come from detectron2's colormap (greys removed); past its end, hues
    follow the golden ratio, so no two of the ``n`` colours are equal.
    """
    colours = [tuple(c) for c in _PALETTE[: min(n, len(_PALETTE))]]
    for i in range(n - len(colours)):
        hue = (0.1 + i * 0.618033988749895) % 1.0
        sat = 0.95 - 0.25 * ((i // 7) % 3) / 2  # vary a little so that near hues still differ
        colours.append(colorsys.hsv_to_rgb(hue, sat, 0.9 - 0.02 * (i % 5)))
    return colours


def draw_proposals(image_bgr, instances, top_n=20, score_labels=True, alpha=0.5, min_side=512,
                   mask_threshold=0.5):
    """Overlay the ``top_n`` highest-scoring proposals of one image.

    Args:
        image_bgr (ndarray): ``(H, W, 3)`` uint8, **BGR**.
        instances (Instances): in the image's frame, with ``scores`` ``(N,)`` and masks in any
            of the model's formats (``pred_masks`` ``(N, H, W)``, ``pred_masks_rle``, or ROI
            ``pred_masks`` ``(N, 1, m, m)`` + ``pred_mask_boxes``); the model's
            ``outputs[i]["instances"]``, any device. Only the drawn proposals are made dense.
        top_n (int): how many proposals to draw, best first; ``None`` or ``<= 0`` draws all.
        score_labels (bool): write each proposal's rank and score (``"#1 0.93"``) at its mask.
        alpha (float): mask opacity.
        min_side (int): draw images whose shorter side is below this enlarged to it, so that
            masks and score labels of small images stay readable; ``0`` / ``None``: own size.
        mask_threshold (float): binarises ROI probabilities (the model's ``MASK_THRESHOLD``).

    Returns:
        ndarray: ``(round(s * H), round(s * W), 3)`` uint8 **RGB**, ``s = max(1, min_side /
        min(H, W))``. With no proposals, the (enlarged) input image in RGB.

    Each drawn proposal gets its own colour, chosen by score rank (see :func:`proposal_colors`).
    """
    image_bgr = np.asarray(image_bgr)
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image_bgr.shape}")
    image_rgb = np.ascontiguousarray(image_bgr[:, :, ::-1]).astype(np.uint8)
    height, width = image_rgb.shape[:2]
    scale = max(1.0, min_side / min(height, width)) if min_side else 1.0
    out_size = (int(round(width * scale)), int(round(height * scale)))  # cv2 order: (W, H)

    def plain():
        return cv2.resize(image_rgb, out_size, interpolation=cv2.INTER_LINEAR) if scale > 1 else image_rgb.copy()

    if len(instances) == 0:
        return plain()

    scores = to_numpy(instances.scores).astype(np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    if top_n is not None and top_n > 0:
        order = order[:top_n]
    masks = to_numpy(proposal_bitmasks(instances[torch.as_tensor(order)], mask_threshold))
    if masks.shape[1:] != (height, width):
        raise ValueError(f"masks are {masks.shape[1:]} but the image is {(height, width)}")
    masks = masks >= 0.5 if masks.dtype != np.bool_ else masks
    keep = masks.reshape(len(masks), -1).any(axis=1)  # an empty mask has nothing to draw or label
    masks, order = masks[keep], order[keep]
    if len(order) == 0:
        return plain()

    labels = [f"#{r + 1} {scores[i]:.2f}" for r, i in enumerate(order)] if score_labels else None
    # Visualizer draws at ``scale`` x the image size, masks and text included (not a blurred upsample).
    vis = Visualizer(image_rgb, metadata=None, scale=scale, instance_mode=ColorMode.IMAGE)
    colours = proposal_colors(len(order))
    vis.overlay_instances(masks=[m.astype(np.uint8) for m in masks], assigned_colors=colours, alpha=alpha)
    if labels:
        _draw_labels(vis, masks, labels, colours)
    out = vis.output.get_image()
    if out.shape[:2] != out_size[::-1]:  # matplotlib rounding
        out = cv2.resize(out, out_size, interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out, dtype=np.uint8)


def _draw_labels(vis, masks, labels, colours):
    """Each label at its mask's median pixel, in the mask's colour on a dark box; a label that
    would cover an earlier (better-ranked) one moves down, then up, until it is clear, so
    overlapping masks (near-duplicates, the point of these pictures) keep readable labels."""
    height, width = masks.shape[1:]
    font = vis._default_font_size  # Visualizer's size for this image (in image pixels)
    line_h = 1.6 * font
    placed = []  # (x0, y0, x1, y1) of the labels drawn, in image pixels
    for mask, text, colour in zip(masks, labels, colours):
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            continue
        cx, cy = float(np.median(xs)), float(np.median(ys))
        half_w = 0.42 * font * len(text)  # generous: matplotlib glyphs are ~0.6-0.8 font wide
        cx = min(max(cx, half_w), width - half_w)
        for step in [0] + [s * k for k in range(1, 40) for s in (1, -1)]:
            y = min(max(cy + step * line_h, line_h / 2), height - line_h / 2)
            box = (cx - half_w, y - line_h / 2, cx + half_w, y + line_h / 2)
            if all(box[2] <= b[0] or box[0] >= b[2] or box[3] <= b[1] or box[1] >= b[3] for b in placed):
                break
        placed.append(box)
        vis.draw_text(text, (cx, y), color=vis._change_color_brightness(colour, brightness_factor=0.7),
                      horizontal_alignment="center", font_size=font)


def best_proposal_per_object(instances, gt_masks, mask_threshold=0.5):
    """For each ground-truth object, the proposal that covers it best (what AR counts).

    Args:
        instances (Instances): one image's proposals, any mask format, in score order.
        gt_masks: ``(G, H, W)`` bool masks of the objects (tensor or array).

    Returns:
        ``(index (G,) int64, iou (G,) float64)``: the position of each object's best proposal in
        ``instances`` (its rank - 1) and their mask IoU; -1 and 0 where no proposal overlaps it.
    """
    gt = np.asarray(to_numpy(gt_masks), dtype=np.uint8).reshape(-1, *instances.image_size)
    index, best = np.full(len(gt), -1, np.int64), np.zeros(len(gt))
    if len(gt) == 0 or len(instances) == 0:
        return index, best
    gt_rles = mask_util.encode(np.asfortranarray(gt.transpose(1, 2, 0)))
    iou = mask_util.iou(proposal_rles(instances, mask_threshold), gt_rles, [0] * len(gt_rles))  # (N, G)
    iou = np.asarray(iou).reshape(len(instances), len(gt))
    hit = iou.max(axis=0) > 0
    index[hit], best[hit] = iou.argmax(axis=0)[hit], iou.max(axis=0)[hit]
    return index, best


def draw_best_per_object(image_bgr, instances, gt_masks, alpha=0.5, min_side=512, mask_threshold=0.5):
    """The recall view: each object's best proposal (:func:`best_proposal_per_object`), labelled
    with its rank and IoU (``"#37 IoU 0.82"``); objects no proposal overlaps are outlined in red
    and labelled ``"missed"``. Same image conventions as :func:`draw_proposals` (BGR in, RGB out,
    enlarged to ``min_side``). ``gt_masks``: ``(G, H, W)`` bool."""
    image_rgb = np.ascontiguousarray(np.asarray(image_bgr)[:, :, ::-1]).astype(np.uint8)
    height, width = image_rgb.shape[:2]
    scale = max(1.0, min_side / min(height, width)) if min_side else 1.0
    gt = np.asarray(to_numpy(gt_masks), dtype=bool).reshape(-1, height, width)
    index, iou = best_proposal_per_object(instances, gt, mask_threshold)
    vis = Visualizer(image_rgb, metadata=None, scale=scale, instance_mode=ColorMode.IMAGE)
    found = np.flatnonzero(index >= 0)
    if len(found):
        masks = to_numpy(proposal_bitmasks(instances[torch.as_tensor(index[found])], mask_threshold))
        colours = proposal_colors(len(found))
        labels = [f"#{index[g] + 1} IoU {iou[g]:.2f}" for g in found]
        vis.overlay_instances(masks=[m.astype(np.uint8) for m in masks], assigned_colors=colours, alpha=alpha)
        _draw_labels(vis, masks, labels, colours)
    for g in np.flatnonzero(index < 0):
        vis.draw_binary_mask(gt[g].astype(np.uint8), color=(1.0, 0.0, 0.0), edge_color=(1.0, 0.0, 0.0),
                             text="missed", alpha=0.0)
    out = vis.output.get_image()
    size = (int(round(width * scale)), int(round(height * scale)))
    if out.shape[:2] != size[::-1]:
        out = cv2.resize(out, size, interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out, dtype=np.uint8)


def side_by_side(images, titles=None, gap=8, title_height=None, background=(255, 255, 255)):
    """Paste RGB images left to right under a title strip.

    Args:
        images (list[ndarray]): ``(H_i, W_i, 3)`` uint8 RGB (or ``(H_i, W_i)`` grey) images;
            shorter ones are padded at the bottom.
        titles (list[str] | None): one caption per image, drawn in black above it.
        gap (int): pixels between images.
        title_height (int | None): height of the strip; default scales with the tallest image.
        background: RGB fill of the strip, gaps and padding.

    Returns:
        ndarray: ``(title_height + max H_i, sum W_i + gap * (n - 1), 3)`` uint8 RGB.
    """
    if len(images) == 0:
        raise ValueError("side_by_side needs at least one image")
    titles = list(titles) if titles is not None else [""] * len(images)
    if len(titles) != len(images):
        raise ValueError(f"{len(images)} images but {len(titles)} titles")
    images = [np.asarray(im) for im in images]
    images = [np.repeat(im[:, :, None], 3, axis=2) if im.ndim == 2 else im for im in images]
    for im in images:
        if im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"expected (H, W, 3) images, got shape {im.shape}")
    max_h = max(im.shape[0] for im in images)
    if title_height is None:
        title_height = int(np.clip(round(max_h * 0.08), 24, 64)) if any(titles) else 0
    width = sum(im.shape[1] for im in images) + gap * (len(images) - 1)
    canvas = np.empty((title_height + max_h, width, 3), np.uint8)
    canvas[:] = np.asarray(background, np.uint8)

    font = cv2.FONT_HERSHEY_SIMPLEX
    x = 0
    for im, title in zip(images, titles):
        h, w = im.shape[:2]
        canvas[title_height : title_height + h, x : x + w] = im.astype(np.uint8)
        if title and title_height > 0:
            # Largest scale (<= 1) at which the caption fits this image's width and the strip.
            thickness = 1 if title_height < 40 else 2
            scale = title_height / 40.0
            (tw, th), _ = cv2.getTextSize(title, font, scale, thickness)
            if tw > w - 4:
                scale *= (w - 4) / max(tw, 1)
                (tw, th), _ = cv2.getTextSize(title, font, scale, thickness)
            org = (x + max((w - tw) // 2, 2), (title_height + th) // 2)
            cv2.putText(canvas, title, org, font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
        x += w + gap
    return canvas
