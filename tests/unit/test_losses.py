"""The two loss terms and the mask-loss normalisation (instancefcn_d2/losses.py), against a
direct per-pixel logistic loss written out here."""
import math

import pytest
import torch

from instancefcn_d2.losses import mask_loss, objectness_loss


def _bce(x, t):
    """Logistic loss of one logit, written out: -t log s(x) - (1 - t) log(1 - s(x))."""
    s = 1 / (1 + math.exp(-x))
    return -(t * math.log(s) + (1 - t) * math.log(1 - s))


def _data(p=3, m=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(p, m, m, generator=g, dtype=torch.float64), (torch.rand(p, m, m, generator=g) > 0.5).double()


def test_window_normalisation_is_the_papers_sum_over_pixels():
    logits, targets = _data()
    num_sampled = 8
    expected = sum(_bce(x, t) for x, t in zip(logits.flatten().tolist(), targets.flatten().tolist())) / num_sampled
    got = mask_loss(logits, targets, logits, "window", num_sampled)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_pixel_normalisation_is_a_mean_over_pixels():
    logits, targets = _data()
    n = logits.numel()
    expected = sum(_bce(x, t) for x, t in zip(logits.flatten().tolist(), targets.flatten().tolist())) / n
    assert mask_loss(logits, targets, logits, "pixel").item() == pytest.approx(expected, rel=1e-9)


def test_paper_ratio_between_terms():
    # Paper: sum_i [L(p_i) + sum_j L(S_ij)]; with one normaliser (the sampled windows) the two
    # terms keep that ratio: one window's mask weighs m^2 pixels, each like one objectness sample.
    logits, targets = _data(p=2, m=4)
    obj, labels = torch.tensor([0.3, -1.2, 2.0, 0.0], dtype=torch.float64), torch.tensor([1, 1, 0, 0])
    total = objectness_loss(obj, labels) + mask_loss(logits, targets, logits, "window", len(obj))
    paper = (sum(_bce(x, t) for x, t in zip(obj.tolist(), labels.tolist()))
             + sum(_bce(x, t) for x, t in zip(logits.flatten().tolist(), targets.flatten().tolist()))) / len(obj)
    assert total.item() == pytest.approx(paper, rel=1e-9)


def test_unknown_normalisation_is_rejected():
    logits, targets = _data()
    with pytest.raises(ValueError, match="window"):
        mask_loss(logits, targets, logits, "mean")


def test_no_positive_is_zero_but_connected():
    maps = torch.randn(1, 4, 3, 3, requires_grad=True)
    loss = mask_loss(maps[:0, :0], maps[:0, :0], maps)
    assert loss.item() == 0.0
    loss.backward()
    # connected (DDP sees the branch used) and exactly zero: no positive, no mask gradient
    assert maps.grad is not None and torch.equal(maps.grad, torch.zeros_like(maps))
