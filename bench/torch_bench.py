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

Losses whose library is not installed (torchvision for the box losses and the sigmoid focal loss)
are left out with a note on stderr.
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
    """The workload list of `trainer bench` (trainer/src/bench.rs), then the torch.nn losses
    that the workspace adds next."""
    w = [(l, [n]) for l in ("l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss")
         for n in (10**3, 10**5, 10**6, 10**7)]
    w += [(l, [n]) for l in ("binary_cross_entropy_with_logits", "sigmoid_focal_loss")
          for n in (10**5, 10**6, 10**7)]
    w += [("cross_entropy", s) for s in ([10**4, 10], [10**5, 100], [10**4, 1000])]
    w += [("kl_div", [10**4, 1000])]
    w += [(l, [n, 4]) for l in ("iou_loss", "giou_loss", "diou_loss", "ciou_loss")
          for n in (10**3, 10**5, 10**6)]
    w += [("dice_loss", [8, 4, 128, 128]), ("dice_loss", [2, 4, 64, 128, 128])]
    w += [(l, [10**6]) for l in ("poisson_nll_loss", "gaussian_nll_loss", "margin_ranking_loss",
                                 "soft_margin_loss", "hinge_embedding_loss", "log_cosh_loss")]
    w += [(l, [10**4, 100]) for l in ("multilabel_soft_margin_loss", "multi_margin_loss")]
    w += [(l, [10**4, 128]) for l in ("cosine_embedding_loss", "triplet_margin_loss")]
    w += [("ctc_loss", [100, 16, 32, 30])]
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
