"""Train the demo detector on the synthetic world and export it as ONNX (Ultralytics output layout).

A development tool, not a product dependency (needs PyTorch and onnx):

    .venv/bin/python -m samples.train_detector --out samples/models/world_detector.onnx

Renders the training set once into memory (train seeds never overlap the held-out seeds used by
tests and the model card), trains a small anchor-free detector (stride 8/16/32 FPN, shared decoupled
heads, centre-sampling assignment, GIoU box loss, IoU-aware BCE class loss), keeps the checkpoint that
scores best on separate validation worlds, evaluates it on held-out seeds and writes the ONNX with a
dynamic batch: input `images` [B,3,S,S] RGB/255, letterbox pad 114;
output [B, 4+nc, N] = (cx, cy, w, h) in input pixels and sigmoid class scores.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from samples.evaluate_detector import SCENES, held_out_frames
from samples.world import CLASS_NAMES, World
from samples.world.metrics import ImageEval, mean_average_precision
from samples.world.modeling import MIN_VISIBILITY, decode_ultralytics, labels, letterbox

TRAIN_SIZES = ((640, 360), (768, 432), (512, 384), (480, 360))
VALIDATION_SEEDS = tuple(range(800, 812))  # choose the exported checkpoint; never trained on, never reported
STRIDES = (8, 16, 32)
CENTRE_RADIUS = 1.5  # strides around a box centre that may become positives
NMS_IOU = 0.45  # the pipeline default (detector.iou_threshold)
RARE_CLASSES = (3, 4)  # bus, truck: a few per minute, so training frames are chosen to contain them


def conv(c_in: int, c_out: int, k: int = 3, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(conv(c, c // 2, 1), conv(c // 2, c, 3))

    def forward(self, x):
        return x + self.body(x)


def separable(c_in: int, c_out: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1: a 3x3 receptive field at a fraction of the cost."""
    return nn.Sequential(nn.Conv2d(c_in, c_in, 3, 1, 1, groups=c_in, bias=False), nn.BatchNorm2d(c_in),
                         nn.ReLU(inplace=True), conv(c_in, c_out, 1))


class TinyDetector(nn.Module):
    """Backbone 32-24-48-80-112 channels, top-down FPN to `width` channels, shared decoupled head.

    About 0.14 GMAC per 320x320 image.
    """

    def __init__(self, num_classes: int, size: int, width: int = 48, stem: str = "patch"):
        super().__init__()
        self.num_classes, self.size = num_classes, size
        if stem == "patch":  # 4x4/4 patches: full-resolution layers dominate CPU time in small models
            self.stem = nn.Sequential(nn.Conv2d(3, 32, 4, 4, 0, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
                                      conv(32, 24, 1))
        else:
            self.stem = nn.Sequential(conv(3, 16, 3, 2), conv(16, 24, 3, 2))
        self.c3 = nn.Sequential(conv(24, 48, 3, 2), Residual(48))
        self.c4 = nn.Sequential(conv(48, 80, 3, 2), Residual(80))
        self.c5 = nn.Sequential(conv(80, 112, 3, 2), Residual(112))
        self.lat = nn.ModuleList([conv(48, width, 1), conv(80, width, 1), conv(112, width, 1)])
        self.smooth = nn.ModuleList([nn.Identity(), conv(width, width)])
        self.cls_branch = nn.Sequential(separable(width, width), separable(width, width), nn.Conv2d(width, num_classes, 1))
        self.reg_branch = nn.Sequential(separable(width, width), separable(width, width), nn.Conv2d(width, 4, 1))
        self.level_scale = nn.Parameter(torch.ones(3))
        nn.init.constant_(self.cls_branch[-1].bias, -4.6)
        for i, s in enumerate(STRIDES):
            n = size // s
            ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
            grid = torch.stack([xs, ys], -1).reshape(-1, 2).float()
            self.register_buffer(f"grid{i}", (grid + 0.5) * s, persistent=False)
        self.register_buffer("stride_of", torch.cat([torch.full(((size // s) ** 2,), float(s)) for s in STRIDES]),
                             persistent=False)

    def features(self, x):
        c3 = self.c3(self.stem(x))
        c4 = self.c4(c3)
        c5 = self.c5(c4)
        p5 = self.lat[2](c5)
        p4 = self.smooth[1](self.lat[1](c4) + F.interpolate(p5, scale_factor=2.0, mode="nearest"))
        p3 = self.smooth[0](self.lat[0](c3) + F.interpolate(p4, scale_factor=2.0, mode="nearest"))
        return p3, p4, p5

    def raw(self, x):
        """(class logits (B, N, nc), boxes (B, N, 4) cx, cy, w, h in input pixels)."""
        logits, boxes = [], []
        for i, p in enumerate(self.features(x)):
            logits.append(self.cls_branch(p).flatten(2).transpose(1, 2))
            reg = self.reg_branch(p).flatten(2).transpose(1, 2) * self.level_scale[i]
            s = STRIDES[i]
            xy = getattr(self, f"grid{i}") + reg[..., :2] * s
            wh = torch.exp(reg[..., 2:].clamp(max=6.0)) * s
            boxes.append(torch.cat([xy, wh], -1))
        return torch.cat(logits, 1), torch.cat(boxes, 1)

    def forward(self, x):
        logits, boxes = self.raw(x)
        return torch.cat([boxes, logits.sigmoid()], -1).transpose(1, 2)  # [B, 4+nc, N]


def pick_frames(world: World, count: int, rare_share: float, rng: np.random.Generator) -> np.ndarray:
    """`count` frame indices from the first 10 minutes; up to `rare_share` of them show a bus or truck."""
    if rare_share <= 0:
        return rng.choice(15 * 600, count, replace=False)
    candidates = rng.choice(15 * 600, 4 * count, replace=False)
    rare = np.array([any(g.class_id in RARE_CLASSES and g.visibility >= MIN_VISIBILITY
                         for g in world.ground_truth(int(i))) for i in candidates])
    chosen = candidates[rare][: round(count * rare_share)]
    return np.concatenate([chosen, candidates[~rare][: count - len(chosen)]])


def letterboxed(frames, size: int):
    """(image, ground truth) pairs -> letterboxed images (K, S, S, 3) uint8 and per-image (boxes, classes, ignore)."""
    images, targets = [], []
    for img, truth in frames:
        boxed, lb = letterbox(img, size)
        images.append(boxed)
        targets.append(labels(truth, lb))
    return np.stack(images), targets


def render_set(seeds, frames_per_seed: int, size: int, rng: np.random.Generator, rare_share: float = 0.0):
    """`frames_per_seed` random frames of each world, at a random training size, letterboxed (see letterboxed)."""
    def frames():
        for seed in seeds:
            wh = TRAIN_SIZES[int(rng.integers(len(TRAIN_SIZES)))]
            world = World(SCENES[seed % len(SCENES)], seed=seed, size=wh, fps=15)
            for index in pick_frames(world, frames_per_seed, rare_share, rng):
                yield world.render(int(index))
    return letterboxed(frames(), size)


def giou(a, b):
    """GIoU of matching rows of a, b (N, 4) xyxy."""
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(1), (b[:, 2:] - b[:, :2]).prod(1)
    union = area_a + area_b - inter
    iou = inter / union.clamp(min=1e-6)
    hull = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).prod(1)
    return iou - (hull - union) / hull.clamp(min=1e-6), iou


def pad_targets(targets, device):
    """Per-image (boxes, classes, ignore) -> padded tensors (B, G, 4), (B, G), (B, G) ignore, (B, G) valid."""
    g = max(1, max(len(t[1]) for t in targets))
    boxes = torch.zeros(len(targets), g, 4)
    classes = torch.zeros(len(targets), g, dtype=torch.long)
    ignore = torch.zeros(len(targets), g, dtype=torch.bool)
    valid = torch.zeros(len(targets), g, dtype=torch.bool)
    for i, (gb, gc, gi) in enumerate(targets):
        n = len(gc)
        boxes[i, :n], classes[i, :n] = torch.as_tensor(gb), torch.as_tensor(gc)
        ignore[i, :n], valid[i, :n] = torch.as_tensor(gi), True
    return boxes.to(device), classes.to(device), ignore.to(device), valid.to(device)


def level_ranges(coarse_from: float) -> tuple:
    """The longest box sides (model px) each pyramid level learns; stride 32 takes boxes from `coarse_from` up,
    so long, thin vehicles (a side-on bus is ~100 x 20 px) get its wide receptive field."""
    return (0, 72), (48, 150), (coarse_from, 1e9)


def assign(model: TinyDetector, boxes, ignore, valid, ranges):
    """Centre sampling over a batch: a point is positive for the smallest ground-truth box whose centre
    is within CENTRE_RADIUS strides of it, that contains it (a quarter stride of slack) and whose largest
    side fits the point's pyramid level (`ranges`, from level_ranges).

    boxes (B, G, 4) model px. Returns (gt index per point (B, N) long, -1 = negative; ignore-point mask (B, N)).
    """
    pts = torch.cat([model.grid0, model.grid1, model.grid2])[None, :, None, :]  # (1, N, 1, 2)
    stride = model.stride_of[None, :, None, None]
    bx = boxes[:, None]  # (B, 1, G, 4)
    centre = (bx[..., :2] + bx[..., 2:]) / 2
    near_centre = ((pts - centre).abs() <= CENTRE_RADIUS * stride).all(-1)
    nearest = ((pts - centre).abs() <= 0.5 * stride).all(-1)  # every box keeps at least one point
    inside = ((pts >= bx[..., :2] - 0.25 * stride) & (pts <= bx[..., 2:] + 0.25 * stride)).all(-1)
    side = (boxes[..., 2:] - boxes[..., :2]).max(-1).values[:, None]  # (B, 1, G)
    level = torch.cat([torch.full(((model.size // s) ** 2,), i) for i, s in enumerate(STRIDES)]).to(boxes.device)
    lo = torch.tensor([r[0] for r in ranges], device=boxes.device, dtype=boxes.dtype)[level][None, :, None]
    hi = torch.tensor([r[1] for r in ranges], device=boxes.device, dtype=boxes.dtype)[level][None, :, None]
    ok = ((near_centre & inside) | nearest) & (side >= lo) & (side <= hi) & valid[:, None]
    area = (boxes[..., 2:] - boxes[..., :2]).prod(-1)[:, None].expand_as(ok)
    best = torch.where(ok, area, torch.full_like(area, 1e12)).argmin(-1)  # (B, N)
    has = ok.any(-1)
    ign = has & torch.gather(ignore, 1, best)
    idx = torch.where(has & ~ign, best, torch.full_like(best, -1))
    return idx, ign


def loss_fn(model, logits, boxes, targets, device, ranges):
    """(class loss, box loss), both normalised by the number of positive points in the batch."""
    gb, gc, gi, valid = pad_targets(targets, device)
    idx, ign = assign(model, gb, gi, valid, ranges)
    pos = idx >= 0
    n = max(int(pos.sum()), 1)
    cls_t = torch.zeros_like(logits)
    box_loss = logits.new_zeros(())
    if pos.any():
        b_i = torch.nonzero(pos)[:, 0]
        g_i = idx[pos]
        pb = boxes[pos]
        pxyxy = torch.cat([pb[:, :2] - pb[:, 2:] / 2, pb[:, :2] + pb[:, 2:] / 2], 1)
        g, iou = giou(pxyxy, gb[b_i, g_i])
        box_loss = (1 - g).sum()
        cls_t[pos] = F.one_hot(gc[b_i, g_i], logits.shape[-1]).to(logits.dtype) * iou.detach().clamp(min=0.1)[:, None]
    weight = (~ign).to(logits.dtype)[..., None]
    cls_loss = (F.binary_cross_entropy_with_logits(logits, cls_t, reduction="none") * weight).sum()
    return cls_loss / n, 5.0 * box_loss / n


def augment(x: torch.Tensor, targets, rng: np.random.Generator):
    """Horizontal flip, channel shuffle and greyscale (shape, not colour), brightness/contrast jitter."""
    out_t = []
    flips = rng.random(len(x)) < 0.5
    for i in range(len(x)):
        gb, gc, gi = targets[i]
        if flips[i]:
            x[i] = x[i].flip(-1)
            gb = gb.copy()
            gb[:, [0, 2]] = x.shape[-1] - gb[:, [2, 0]]
        out_t.append((gb, gc, gi))
        x[i] = x[i][torch.as_tensor(rng.permutation(3))]
        if rng.random() < 0.15:
            x[i] = x[i].mean(0, keepdim=True).expand(3, -1, -1)
    gain = torch.as_tensor(rng.uniform(0.75, 1.25, (len(x), 1, 1, 1)), dtype=x.dtype, device=x.device)
    bias = torch.as_tensor(rng.uniform(-0.08, 0.08, (len(x), 1, 1, 1)), dtype=x.dtype, device=x.device)
    return (x * gain + bias).clamp(0, 1), out_t


class Ema:
    """Exponential moving average of the weights (and BatchNorm statistics); the EMA is what gets
    evaluated and exported. The decay ramps up over the first few thousand steps so early weights fade."""

    def __init__(self, model: nn.Module, decay: float, ramp_steps: float = 1000.0):
        self.model = copy.deepcopy(model).eval()
        self.decay, self.ramp_steps, self.updates = decay, ramp_steps, 0
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.ramp_steps))
        for mine, theirs in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if mine.dtype.is_floating_point:
                mine.mul_(d).add_(theirs.detach(), alpha=1 - d)
            else:
                mine.copy_(theirs)


def score(model, device, images, targets) -> dict:
    """mAP of `model` on letterboxed images (K, S, S, 3) uint8 with their (boxes, classes, ignore)."""
    was_training = model.training
    model.eval()
    records = []
    with torch.no_grad():
        for s in range(0, len(images), 32):
            x = torch.as_tensor(images[s : s + 32], device=device).permute(0, 3, 1, 2).float() / 255
            out = model(x).cpu().numpy()
            for row, o in enumerate(out):
                db, ds, dc = decode_ultralytics(o, iou=NMS_IOU)
                records.append(ImageEval(db, ds, dc, *targets[s + row]))
    model.train(was_training)
    return mean_average_precision(records, len(CLASS_NAMES))


def summary(metrics: dict) -> str:
    per_class = " ".join(f"{CLASS_NAMES[c]} {v['ap50']:.3f}" for c, v in metrics["per_class"].items())
    return f"mAP@0.5 {metrics['map50']:.3f} mAP@0.5:0.95 {metrics['map50_95']:.3f} ({per_class})"


def train(args) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    images, targets = render_set(range(args.seed_base, args.seed_base + args.train_seeds), args.frames_per_seed, args.size,
                                 rng, args.rare_share)
    # validation worlds are neither training nor held-out worlds; their own generator leaves the training draws alone
    val_images, val_targets = render_set(VALIDATION_SEEDS, args.val_frames, args.size, np.random.default_rng(VALIDATION_SEEDS[0]),
                                         rare_share=0.25)
    print(f"rendered {len(images)} training and {len(val_images)} validation images in {time.time() - t0:.0f} s", flush=True)
    model = TinyDetector(len(CLASS_NAMES), args.size, stem=args.stem).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    steps = args.epochs * math.ceil(len(images) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps, pct_start=0.1)
    ema = Ema(model, args.ema) if args.ema > 0 else None
    # frames with the rare large vehicles are drawn three times as often
    rare = np.array([float(np.isin(t[1][~t[2]], RARE_CLASSES).any()) for t in targets])
    p_frame = (1 + 2 * rare) / (1 + 2 * rare).sum()
    ranges = level_ranges(args.coarse_from)
    val_from = args.epochs // 2 if args.val_from is None else min(args.val_from, args.epochs)
    best = None  # (validation mAP@0.5, epoch, state dict) of the best checkpoint so far
    for epoch in range(args.epochs):
        order = rng.choice(len(images), len(images), p=p_frame)
        for s in range(0, len(order), args.batch):
            sel = order[s : s + args.batch]
            x = torch.as_tensor(images[sel], device=device).permute(0, 3, 1, 2).float() / 255
            x, tg = augment(x, [targets[i] for i in sel], rng)
            logits, boxes = model.raw(x)
            l_cls, l_box = loss_fn(model, logits, boxes, tg, device, ranges)
            opt.zero_grad()
            (l_cls + l_box).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model)
        line = f"epoch {epoch + 1}/{args.epochs} cls {l_cls.item():.3f} box {l_box.item():.3f}"
        current = ema.model if ema is not None else model
        if epoch + 1 >= val_from and (args.epochs - epoch - 1) % args.val_every == 0:
            val = score(current, device, val_images, val_targets)
            line += f" | validation {summary(val)}"
            if best is None or val["map50"] > best[0]:
                best = (val["map50"], epoch + 1, copy.deepcopy(current.state_dict()))
        print(f"{line} {time.time() - t0:.0f} s", flush=True)
    train_s = time.time() - t0
    model = ema.model if ema is not None else model
    heldout_images, heldout_targets = letterboxed(held_out_frames(100), args.size)  # what samples.evaluate_detector scores
    last = score(model, device, heldout_images, heldout_targets)
    print(f"held-out, last epoch: {summary(last)}", flush=True)
    model.load_state_dict(best[2])
    metrics = score(model, device, heldout_images, heldout_targets)
    print(f"held-out, epoch {best[1]} (best on validation, mAP@0.5 {best[0]:.3f}): {summary(metrics)}", flush=True)
    metrics.update(train_seconds=round(train_s), epoch=best[1], validation_map50=best[0], last_epoch_map50=last["map50"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out.with_suffix(".pt"))
    args.out.with_suffix(".metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    if not args.no_export:
        export(model.cpu().eval(), args.out, args.size)


def export(model: TinyDetector, out: Path, size: int) -> None:
    """ONNX with a dynamic batch and Ultralytics-style metadata (names, imgsz, stride)."""
    import onnx  # noqa: PLC0415 - export only

    dummy = torch.zeros(2, 3, size, size)
    torch.onnx.export(model, (dummy,), str(out), input_names=["images"], output_names=["output0"],
                      dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}}, opset_version=17, dynamo=False)
    proto = onnx.load(str(out))
    names = "{" + ", ".join(f"{i}: '{n}'" for i, n in enumerate(CLASS_NAMES)) + "}"
    for key, value in (("names", names), ("imgsz", f"[{size}, {size}]"), ("stride", "32"),
                       ("description", "streamweave demo detector trained on samples/world")):
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(proto, str(out))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("samples/models/world_detector.onnx"))
    p.add_argument("--size", type=int, default=320, help="square model input; must be a multiple of 32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seed-base", type=int, default=100, help="first training world seed (held-out: 900-905)")
    p.add_argument("--train-seeds", type=int, default=240)
    p.add_argument("--frames-per-seed", type=int, default=40)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--ema", type=float, default=0.999,
                   help="keep an exponential moving average of the weights with this decay and use it (0: the raw weights)")
    p.add_argument("--rare-share", type=float, default=0.0,
                   help="share of each world's training frames chosen to show a bus or truck (0: all at random)")
    p.add_argument("--val-frames", type=int, default=50, help="frames per validation world (seeds 800-811)")
    p.add_argument("--val-from", type=int, help="first epoch whose checkpoint may be exported (default: half way)")
    p.add_argument("--val-every", type=int, default=2,
                   help="score a checkpoint on the validation worlds every this many epochs, ending at the last one")
    p.add_argument("--coarse-from", type=float, default=64,
                   help="longest box side (model px) from which the stride-32 level learns a box (earlier recipes: 110)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--stem", choices=("patch", "conv"), default="patch")
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--export-only", type=Path, help="export this state dict (.pt) to --out and stop")
    args = p.parse_args(argv)
    if args.export_only:
        model = TinyDetector(len(CLASS_NAMES), args.size, stem=args.stem)
        model.load_state_dict(torch.load(args.export_only, map_location="cpu"))
        export(model.eval(), args.out, args.size)
        return
    train(args)


if __name__ == "__main__":
    main()
