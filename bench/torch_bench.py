#!/usr/bin/env python3
"""PyTorch's side of `trainer bench`: the same workloads, timed the same way, as JSON rows.

A workload is one loss at one input shape, float32, reduction "mean", forward plus the
gradient with respect to the prediction. Every timed repeat builds a new autograd graph and calls
torch.autograd.grad; the reported figure is the median wall time in milliseconds over at least 7
repeats and 0.5 s, after 3 warm-up repeats (the rule `trainer bench` follows).

The output file is a JSON list of rows in the format `trainer bench --json` writes:

    {"loss": "ciou_loss", "shape": [1000000, 4], "impl": "torch", "device": "cpu",
     "threads": 2, "median_ms": 12.3, "min_ms": 11.9, "reps": 11}

and `trainer bench --against FILE` prints the ratio of each of its workloads to this file's.

Run it in a virtual environment outside the repository (torch is never a dependency of the crates
or of their tests):

    python3 -m venv ~/venv-torch && ~/venv-torch/bin/pip install torch torchvision
    ~/venv-torch/bin/python bench/torch_bench.py --threads 2 --out torch.json

Losses whose library is not installed (torchvision for the box losses and the sigmoid focal loss,
monai for clDice and Hausdorff-DT) are left out with a note on stderr. The detection losses and
smp's Lovász hinge and Jaccard losses are written out below in torch after the formulas of
`cases/FORMAT.md` (mmdetection 3.x and the authors' code).
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

# --- inputs: each maker returns (prediction, rest), `rest` being what the loss takes besides
# the prediction. The distributions are those `trainer bench` draws (its generator differs).


def gauss_pair(shape, g):
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def logits_and_bits(shape, g):
    return torch.randn(shape, generator=g), (torch.rand(shape, generator=g) > 0.5).float()


def logits_and_class(shape, g):
    n, c = shape
    return torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)


def log_probs_and_probs(shape, g):
    return (torch.randn(shape, generator=g).log_softmax(-1),
            torch.randn(shape, generator=g).softmax(-1))


def box_pair(shape, g):
    # Targets: corners uniform in [0, 100)², sides in [1, 51); predictions: the target's centre
    # moved by N(0, 5²) per axis and its sides scaled by U(0.7, 1.3), at least 0.5.
    n = shape[0]
    corner = torch.rand(n, 2, generator=g) * 100
    side = torch.rand(n, 2, generator=g) * 50 + 1
    target = torch.cat([corner, corner + side], 1)
    centre = corner + side / 2 + torch.randn(n, 2, generator=g) * 5
    half = (side * (0.7 + 0.6 * torch.rand(n, 2, generator=g))).clamp_min(0.5) / 2
    return torch.cat([centre - half, centre + half], 1), target


def probs_and_mask(shape, g):
    return torch.rand(shape, generator=g), (torch.rand(shape, generator=g) > 0.5).float()


def logits_and_signs(shape, g):
    return torch.randn(shape, generator=g), torch.randint(0, 2, shape, generator=g).float() * 2 - 1


def rates_and_counts(shape, g):
    return torch.randn(shape, generator=g), torch.poisson(torch.rand(shape, generator=g) * 4, generator=g)


def mean_target_var(shape, g):
    return torch.randn(shape, generator=g), (torch.randn(shape, generator=g),
                                             torch.rand(shape, generator=g) + 0.1)


def ranking_triple(shape, g):
    return torch.randn(shape, generator=g), (torch.randn(shape, generator=g),
                                             torch.randint(0, 2, shape, generator=g).float() * 2 - 1)


def multilabel_bits(shape, g):
    return torch.randn(shape, generator=g), (torch.rand(shape, generator=g) > 0.7).float()


def embedding_pair(shape, g):
    n, d = shape
    return torch.randn(n, d, generator=g), (torch.randn(n, d, generator=g),
                                            torch.randint(0, 2, (n,), generator=g).float() * 2 - 1)


def triplet(shape, g):
    return torch.randn(shape, generator=g), (torch.randn(shape, generator=g),
                                             torch.randn(shape, generator=g))


def ctc_batch(shape, g):
    t, n, c, s = shape
    log_probs = torch.randn(t, n, c, generator=g).log_softmax(-1)
    targets = torch.randint(1, c, (n, s), generator=g)
    return log_probs, (targets, torch.full((n,), t, dtype=torch.long),
                       torch.full((n,), s, dtype=torch.long))


# --- losses written out where torch has no function of that name.


def unitbox_iou_loss(p, t, eps=1e-7):
    lt = torch.max(p[:, :2], t[:, :2])
    rb = torch.min(p[:, 2:], t[:, 2:])
    inter = (rb - lt).clamp_min(0).prod(1)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    return (1 - inter / (area(p) + area(t) - inter + eps)).mean()


def monai_dice_loss(p, t, smooth_nr=1e-5, smooth_dr=1e-5):
    dims = tuple(range(2, p.ndim))
    tp = (p * t).sum(dims)
    return (1 - (2 * tp + smooth_nr) / (p.sum(dims) + t.sum(dims) + smooth_dr)).mean()


def log_cosh_loss(p, t):
    # log cosh d = |d| + log1p(exp(-2|d|)) - log 2, stable for large |d|.
    d = (p - t).abs()
    return (d + F.softplus(-2 * d) - 0.6931471805599453).mean()


# --- detection losses (mmdetection 3.x and the authors' formulas, as `cases/FORMAT.md` states
# them), written in torch for the benchmark only.


def varifocal(p, t, alpha=0.75, gamma=2.0):
    s = p.sigmoid()
    w = torch.where(t > 0, t, alpha * (s - t).abs().pow(gamma))
    return (F.binary_cross_entropy_with_logits(p, t, reduction="none") * w).mean()


def quality_focal(p, r, beta=2.0):
    label, score = r
    s = p.sigmoid()
    loss = F.binary_cross_entropy_with_logits(p, torch.zeros_like(p), reduction="none") * s.pow(beta)
    pos = (label >= 0) & (label < p.shape[1])
    rows, cols = pos.nonzero().squeeze(1), label[pos]
    sp = s[rows, cols]
    loss = loss.index_put((rows, cols), F.binary_cross_entropy_with_logits(
        p[rows, cols], score[rows], reduction="none") * (score[rows] - sp).abs().pow(beta))
    return loss.sum(1).mean()


def distribution_focal(p, label):
    left = label.long().clamp(max=p.shape[1] - 2)
    wl = left.float() + 1 - label
    return (F.cross_entropy(p, left, reduction="none") * wl
            + F.cross_entropy(p, left + 1, reduction="none") * (1 - wl)).mean()


def gaussian_focal(p, t, alpha=2.0, gamma=4.0):
    pos = -(p + 1e-12).log() * (1 - p).pow(alpha) * (t == 1)
    neg = -(1 - p + 1e-12).log() * p.pow(alpha) * (1 - t).pow(gamma)
    return (pos + neg).mean()


def balanced_l1(p, t, alpha=0.5, gamma=1.5, beta=1.0):
    x = (p - t).abs()
    b = torch.e ** (gamma / alpha) - 1
    return torch.where(x < beta, alpha / b * (b * x + 1) * torch.log(b * x / beta + 1) - alpha * x,
                       gamma * x + gamma / b - alpha * beta).mean()


def poly1_ce(p, y, epsilon=1.0):
    pt = (F.one_hot(y, p.shape[1]) * p.softmax(1)).sum(1)
    return (F.cross_entropy(p, y, reduction="none") + epsilon * (1 - pt)).mean()


def poly1_focal(p, y, epsilon=1.0, alpha=0.25, gamma=2.0):
    s = p.sigmoid()
    pt = y * s + (1 - y) * (1 - s)
    at = y * alpha + (1 - y) * (1 - alpha)
    fl = at * F.binary_cross_entropy_with_logits(p, y, reduction="none") * (1 - pt).pow(gamma)
    return (fl + epsilon * (1 - pt).pow(gamma + 1) * at).mean()


def _pair(p, t, eps=1e-7):
    """Widths, heights (h + eps, as ultralytics), intersection, union and enclosing box sides."""
    w1, h1 = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1] + eps
    w2, h2 = t[:, 2] - t[:, 0], t[:, 3] - t[:, 1] + eps
    iw = (torch.min(p[:, 2], t[:, 2]) - torch.max(p[:, 0], t[:, 0])).clamp_min(0)
    ih = (torch.min(p[:, 3], t[:, 3]) - torch.max(p[:, 1], t[:, 1])).clamp_min(0)
    inter = iw * ih
    union = w1 * h1 + w2 * h2 - inter + eps
    cw = torch.max(p[:, 2], t[:, 2]) - torch.min(p[:, 0], t[:, 0])
    ch = torch.max(p[:, 3], t[:, 3]) - torch.min(p[:, 1], t[:, 1])
    return w1, h1, w2, h2, inter, union, cw, ch


def _centre_d2(p, t):
    return (((t[:, 0] + t[:, 2]) - (p[:, 0] + p[:, 2])) ** 2 + ((t[:, 1] + t[:, 3]) - (p[:, 1] + p[:, 3])) ** 2) / 4


def eiou(p, t, eps=1e-7):
    """Efficient-IoU (Zhang et al. 2022) on torchvision's DIoU: `loss_bbox::eiou_loss`."""
    x1, y1 = torch.max(p[:, 0], t[:, 0]), torch.max(p[:, 1], t[:, 1])
    x2, y2 = torch.min(p[:, 2], t[:, 2]), torch.min(p[:, 3], t[:, 3])
    inter = torch.zeros_like(x1)
    mask = (y2 > y1) & (x2 > x1)
    inter[mask] = (x2[mask] - x1[mask]) * (y2[mask] - y1[mask])
    w1, h1, w2, h2 = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1], t[:, 2] - t[:, 0], t[:, 3] - t[:, 1]
    union = w1 * h1 + w2 * h2 - inter
    iou = inter / (union + eps)
    cw = torch.max(p[:, 2], t[:, 2]) - torch.min(p[:, 0], t[:, 0])
    ch = torch.max(p[:, 3], t[:, 3]) - torch.min(p[:, 1], t[:, 1])
    diag = cw ** 2 + ch ** 2 + eps
    loss = 1 - iou + _centre_d2(p, t) / diag + (w1 - w2) ** 2 / (cw ** 2 + eps) + (h1 - h2) ** 2 / (ch ** 2 + eps)
    return loss.mean()


def siou(p, t, eps=1e-6, neg_gamma=False):
    """mmdetection's `siou_loss` (mmdet/models/losses/iou_loss.py), written out."""
    lt, rb = torch.max(p[:, :2], t[:, :2]), torch.min(p[:, 2:], t[:, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    ap = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])
    ag = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
    ious = overlap / (ap + ag - overlap + eps)
    enclose = (torch.max(p[:, 2:], t[:, 2:]) - torch.min(p[:, :2], t[:, :2])).clamp(min=eps)
    cw, ch = enclose[:, 0], enclose[:, 1]
    w1, h1 = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1] + eps
    w2, h2 = t[:, 2] - t[:, 0], t[:, 3] - t[:, 1] + eps
    s_cw = (t[:, 0] + t[:, 2] - p[:, 0] - p[:, 2]) * 0.5 + eps
    s_ch = (t[:, 1] + t[:, 3] - p[:, 1] - p[:, 3]) * 0.5 + eps
    sigma = torch.pow(s_cw ** 2 + s_ch ** 2, 0.5)
    sin1, sin2 = torch.abs(s_cw) / sigma, torch.abs(s_ch) / sigma
    sin_alpha = torch.where(sin1 > 2 ** 0.5 / 2, sin2, sin1)
    angle_cost = torch.cos(torch.asin(sin_alpha) * 2 - torch.pi / 2)
    rho_x, rho_y = (s_cw / cw) ** 2, (s_ch / ch) ** 2
    gamma = angle_cost - 2 if neg_gamma else 2 - angle_cost
    distance_cost = 2 - torch.exp(gamma * rho_x) - torch.exp(gamma * rho_y)
    omiga_w = torch.abs(w1 - w2) / torch.max(w1, w2)
    omiga_h = torch.abs(h1 - h2) / torch.max(h1, h2)
    shape_cost = (1 - torch.exp(-omiga_w)) ** 4 + (1 - torch.exp(-omiga_h)) ** 4
    ious = ious - (distance_cost + shape_cost) * 0.5
    return (1 - ious.clamp(min=-1.0, max=1.0)).mean()


def alpha_iou(p, t, alpha=3.0, eps=1e-9):
    w1, h1, w2, h2, inter, union, cw, ch = _pair(p, t, eps)
    iou = inter / union
    v = 4 / torch.pi ** 2 * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        a = v / (v - iou + (1 + eps))
    dist = _centre_d2(p, t) ** alpha / ((cw ** 2 + ch ** 2) ** alpha + eps)
    return (1 - ((iou + eps) ** alpha - dist - (v * a + eps) ** alpha)).mean()


def mpdiou(p, t, img_w=640.0, img_h=640.0):
    *_, inter, union, _, _ = _pair(p, t)
    d1 = (p[:, 0] - t[:, 0]) ** 2 + (p[:, 1] - t[:, 1]) ** 2
    d2 = (p[:, 2] - t[:, 2]) ** 2 + (p[:, 3] - t[:, 3]) ** 2
    return (1 - (inter / union - (d1 + d2) / (img_w ** 2 + img_h ** 2))).mean()


def inner_iou(p, t, ratio=0.7, eps=1e-7):
    def inner(b):
        c, half = (b[:, :2] + b[:, 2:]) / 2, (b[:, 2:] - b[:, :2]) * ratio / 2
        return c - half, c + half
    (pl, pr), (tl, tr) = inner(p), inner(t)
    wh = (torch.min(pr, tr) - torch.max(pl, tl)).clamp_min(0)
    i = wh[:, 0] * wh[:, 1]
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    u = ratio ** 2 * (area(p) + area(t)) - i + eps
    return (1 - i / u).mean()


def shape_iou(p, t, scale=0.0, eps=1e-7):
    w1, h1, w2, h2, inter, union, cw, ch = _pair(p, t, eps)
    ww = 2 * w2.pow(scale) / (w2.pow(scale) + h2.pow(scale))
    hh = 2 * h2.pow(scale) / (w2.pow(scale) + h2.pow(scale))
    dx2 = (((t[:, 0] + t[:, 2]) - (p[:, 0] + p[:, 2])) / 2) ** 2
    dy2 = (((t[:, 1] + t[:, 3]) - (p[:, 1] + p[:, 3])) / 2) ** 2
    dist = (hh * dx2 + ww * dy2) / (cw ** 2 + ch ** 2 + eps)
    ow = hh * (w1 - w2).abs() / torch.max(w1, w2)
    oh = ww * (h1 - h2).abs() / torch.max(h1, h2)
    shape = (1 - torch.exp(-ow)).pow(4) + (1 - torch.exp(-oh)).pow(4)
    return (1 - (inter / union - dist - 0.5 * shape)).mean()


def wise_iou(p, t, mean_iou_loss=1.0, alpha=1.7, delta=2.7):
    w1, h1, w2, h2, inter, union, cw, ch = _pair(p, t, 0.0)
    l_iou = 1 - inter / union
    with torch.no_grad():
        beta = l_iou / mean_iou_loss
        den = cw ** 2 + ch ** 2
    v1 = torch.exp(_centre_d2(p, t) / den) * l_iou
    return (v1 * beta / (delta * alpha ** (beta - delta))).mean()


def focaler_iou(p, t, d=0.0, u=0.95):
    *_, inter, union, _, _ = _pair(p, t)
    return (1 - ((inter / union - d) / (u - d)).clamp(0, 1)).mean()


def nwd(p, t, constant=12.8, eps=1e-6):
    w1, h1, w2, h2 = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1], t[:, 2] - t[:, 0], t[:, 3] - t[:, 1]
    w2d = _centre_d2(p, t) + eps + ((w1 - w2) ** 2 + (h1 - h2) ** 2) / 4
    return (1 - torch.exp(-w2d.sqrt() / constant)).mean()


# --- segmentation losses of smp, written in torch (MONAI's clDice and Hausdorff-DT come from
# monai.losses when it is installed).


def lovasz_hinge(logits, labels):
    x, y = logits.flatten(), labels.flatten()
    errors = 1 - x * (2 * y - 1)
    errors_sorted, perm = torch.sort(errors, descending=True)
    gt = y[perm]
    g = gt.sum()
    jac = 1 - (g - gt.cumsum(0)) / (g + (1 - gt).cumsum(0))
    jac = torch.cat([jac[:1], jac[1:] - jac[:-1]])
    return torch.dot(F.relu(errors_sorted), jac)


def jaccard_multiclass(p, y, eps=1e-7):
    c = p.shape[1]
    prob = p.softmax(1).flatten(2).transpose(0, 1).flatten(1)
    onehot = F.one_hot(y.flatten(1), c).permute(2, 0, 1).flatten(1).to(prob.dtype)
    inter = (prob * onehot).sum(1)
    card = (prob + onehot).sum(1)
    score = inter / (card - inter).clamp_min(eps)
    return ((1 - score) * (onehot.sum(1) > 0)).mean()


def probs_and_classes(shape, g):
    n, c = shape[0], shape[1]
    return torch.randn(shape, generator=g), torch.randint(0, c, (n, *shape[2:]), generator=g)


def soft_targets(shape, g):
    return torch.randn(shape, generator=g), torch.rand(shape, generator=g) * (torch.rand(shape, generator=g) > 0.9)


def qfl_inputs(shape, g):
    n, c = shape
    return torch.randn(n, c, generator=g), (torch.randint(0, c + 1, (n,), generator=g), torch.rand(n, generator=g))


def dfl_inputs(shape, g):
    n, m = shape
    return torch.randn(n, m, generator=g), torch.rand(n, generator=g) * (m - 1)


def heatmaps(shape, g):
    return torch.rand(shape, generator=g) * 0.98 + 0.01, torch.rand(shape, generator=g) ** 4


def losses():
    table = {
        "l1_loss": (F.l1_loss, gauss_pair),
        "mse_loss": (F.mse_loss, gauss_pair),
        "smooth_l1_loss": (lambda p, t: F.smooth_l1_loss(p, t, beta=1.0), gauss_pair),
        "huber_loss": (lambda p, t: F.huber_loss(p, t, delta=1.0), gauss_pair),
        "binary_cross_entropy_with_logits": (F.binary_cross_entropy_with_logits, logits_and_bits),
        "cross_entropy": (F.cross_entropy, logits_and_class),
        "kl_div": (lambda p, t: F.kl_div(p, t, reduction="batchmean"), log_probs_and_probs),
        "iou_loss": (unitbox_iou_loss, box_pair),
        "dice_loss": (monai_dice_loss, probs_and_mask),
        "poisson_nll_loss": (F.poisson_nll_loss, rates_and_counts),
        "gaussian_nll_loss": (lambda p, r: F.gaussian_nll_loss(p, r[0], r[1]), mean_target_var),
        "margin_ranking_loss": (lambda p, r: F.margin_ranking_loss(p, r[0], r[1]), ranking_triple),
        "soft_margin_loss": (F.soft_margin_loss, logits_and_signs),
        "hinge_embedding_loss": (F.hinge_embedding_loss, logits_and_signs),
        "log_cosh_loss": (log_cosh_loss, gauss_pair),
        "multilabel_soft_margin_loss": (F.multilabel_soft_margin_loss, multilabel_bits),
        "multi_margin_loss": (F.multi_margin_loss, logits_and_class),
        "cosine_embedding_loss": (lambda p, r: F.cosine_embedding_loss(p, r[0], r[1]), embedding_pair),
        "triplet_margin_loss": (lambda p, r: F.triplet_margin_loss(p, r[0], r[1]), triplet),
        "ctc_loss": (lambda p, r: F.ctc_loss(p, r[0], r[1], r[2]), ctc_batch),
    }
    table.update({
        "varifocal_loss": (varifocal, soft_targets),
        "quality_focal_loss": (quality_focal, qfl_inputs),
        "distribution_focal_loss": (distribution_focal, dfl_inputs),
        "poly1_cross_entropy": (poly1_ce, logits_and_class),
        "gaussian_focal_loss": (gaussian_focal, heatmaps),
        "balanced_l1_loss": (balanced_l1, gauss_pair),
        "poly1_focal_loss": (poly1_focal, logits_and_bits),
        "eiou_loss": (eiou, box_pair),
        "siou_loss": (siou, box_pair),
        "alpha_iou_loss": (alpha_iou, box_pair),
        "mpdiou_loss": (mpdiou, box_pair),
        "inner_iou_loss": (inner_iou, box_pair),
        "shape_iou_loss": (shape_iou, box_pair),
        "wise_iou_loss": (wise_iou, box_pair),
        "focaler_iou_loss": (focaler_iou, box_pair),
        "nwd_loss": (nwd, box_pair),
        "lovasz_hinge_loss": (lovasz_hinge, logits_and_bits),
        "jaccard_loss": (jaccard_multiclass, probs_and_classes),
    })
    try:
        from monai.losses import HausdorffDTLoss, SoftclDiceLoss
        cldice, hausdorff = SoftclDiceLoss(), HausdorffDTLoss(include_background=False)
        table["soft_cldice_loss"] = (lambda p, t: cldice(p, t), probs_and_mask)
        table["hausdorff_dt_loss"] = (lambda p, t: hausdorff(p, t), probs_and_mask)
    except ImportError as e:
        print(f"monai is not installed ({e}): clDice and Hausdorff-DT are left out", file=sys.stderr)
    try:
        from torchvision import ops
        table.update({
            "sigmoid_focal_loss": (lambda p, t: ops.sigmoid_focal_loss(p, t, reduction="mean"), logits_and_bits),
            "giou_loss": (lambda p, t: ops.generalized_box_iou_loss(p, t, reduction="mean"), box_pair),
            "diou_loss": (lambda p, t: ops.distance_box_iou_loss(p, t, reduction="mean"), box_pair),
            "ciou_loss": (lambda p, t: ops.complete_box_iou_loss(p, t, reduction="mean"), box_pair),
        })
    except ImportError as e:
        print(f"torchvision is not installed ({e}): its losses are left out", file=sys.stderr)
    return table


def workloads():
    """The workload list of `trainer bench` (trainer/src/cli/bench.rs), in its order."""
    w = [(l, [n]) for l in ("l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss")
         for n in (10**3, 10**5, 10**6, 10**7)]
    w += [(l, [n]) for l in ("binary_cross_entropy_with_logits", "sigmoid_focal_loss")
          for n in (10**5, 10**6, 10**7)]
    w += [("cross_entropy", s) for s in ([10**4, 10], [10**5, 100], [10**4, 1000])]
    w += [("kl_div", [10**4, 1000])]
    w += [(l, [n, 4]) for l in ("iou_loss", "giou_loss", "diou_loss", "ciou_loss")
          for n in (10**3, 10**5, 10**6)]
    w += [(l, [n, 4]) for l in ("eiou_loss", "siou_loss") for n in (10**3, 10**5, 10**6)]
    w += [("dice_loss", [8, 4, 128, 128]), ("dice_loss", [2, 4, 64, 128, 128])]
    w += [(l, [10**6]) for l in ("poisson_nll_loss", "gaussian_nll_loss", "margin_ranking_loss",
                                 "soft_margin_loss", "hinge_embedding_loss", "log_cosh_loss")]
    w += [(l, [10**4, 100]) for l in ("multilabel_soft_margin_loss", "multi_margin_loss")]
    w += [(l, [10**4, 128]) for l in ("cosine_embedding_loss", "triplet_margin_loss")]
    w += [("ctc_loss", [100, 16, 32, 30])]
    w += [("soft_cldice_loss", [2, 2, 128, 128]), ("hausdorff_dt_loss", [2, 2, 128, 128]),
          ("lovasz_hinge_loss", [8, 1, 128, 128]), ("jaccard_loss", [8, 4, 128, 128])]
    w += [("varifocal_loss", [10**4, 80]), ("quality_focal_loss", [10**4, 80]),
          ("distribution_focal_loss", [10**5, 17]), ("poly1_cross_entropy", [10**4, 100])]
    w += [(l, [10**6]) for l in ("gaussian_focal_loss", "balanced_l1_loss", "poly1_focal_loss")]
    w += [(l, [n, 4]) for l in ("alpha_iou_loss", "mpdiou_loss", "inner_iou_loss", "shape_iou_loss",
                                "wise_iou_loss", "focaler_iou_loss", "nwd_loss") for n in (10**5, 10**6)]
    return w


def time_workload(fn, make, shape, min_seconds=0.5, min_reps=7, max_reps=2000):
    pred0, rest = make(shape, torch.Generator().manual_seed(0))
    pred = pred0.clone().requires_grad_(True)

    def once():
        return torch.autograd.grad(fn(pred, rest), pred)[0]

    for _ in range(3):
        once()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_seconds and len(times) < max_reps):
        t0 = time.perf_counter()
        once()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times), len(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--only", default="", help="comma-separated loss names")
    ap.add_argument("--min-seconds", type=float, default=0.5, help="timed repeats per workload")
    ap.add_argument("--out", default="torch_bench.json", help="JSON file to write")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    table = losses()
    only = {s for s in args.only.split(",") if s}
    unknown = only - {l for l, _ in workloads()}
    if unknown:
        sys.exit(f"unknown loss in --only: {', '.join(sorted(unknown))}")
    rows = []
    for loss, shape in workloads():
        if (only and loss not in only) or loss not in table:
            continue
        fn, make = table[loss]
        median, fastest, reps = time_workload(fn, make, shape, args.min_seconds)
        rows.append({"loss": loss, "shape": shape, "impl": "torch", "device": "cpu",
                     "threads": args.threads, "median_ms": round(median, 4),
                     "min_ms": round(fastest, 4), "reps": reps})
        print(f"{loss:34s} {str(shape):22s} {median:10.3f} ms", file=sys.stderr)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)
    print(f"{len(rows)} rows written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
