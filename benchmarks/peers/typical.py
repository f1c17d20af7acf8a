"""The script a typical user writes: one reader thread per camera decoding on the CPU (PyAV), frames batched
on the GPU with torch (resize on the CPU with OpenCV, FP16 forward of a TorchScript YOLO export), NMS with
torchvision. Run by peers.py, which gives it the cameras and reads its record."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PyAvCamera, Record, arguments  # noqa: E402


def detect(model, images: list[np.ndarray], size: int, conf: float, device, half: bool) -> list[torch.Tensor]:
    batch = np.stack([cv2.resize(image, (size, size)) for image in images])
    x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2)
    x = (x.half() if half else x.float()) / 255
    with torch.inference_mode():
        pred = model(x)
        pred = pred[0] if isinstance(pred, (list, tuple)) else pred  # (B, 4 + classes, anchors)
        pred = pred.transpose(1, 2)
        kept = []
        for p in pred:
            scores, classes = p[:, 4:].max(1)
            p, scores, classes = p[scores > conf], scores[scores > conf], classes[scores > conf]
            xy, wh = p[:, :2], p[:, 2:4] / 2
            boxes = torch.cat([xy - wh, xy + wh], 1)
            keep = torchvision.ops.batched_nms(boxes.float(), scores.float(), classes, 0.45)[:300]
            kept.append(torch.cat([boxes[keep], scores[keep, None], classes[keep, None].to(boxes.dtype)], 1).cpu())
    return kept


def main() -> int:
    args = arguments(__doc__)
    device = torch.device(args.device)
    half = device.type == "cuda"
    model = torch.jit.load(args.model, map_location=device).eval()
    model = model.half() if half else model.float()
    cameras = [PyAvCamera(i, url, args.epoch_ns) for i, url in enumerate(args.urls)]
    for camera in cameras:
        camera.start()
    record = Record(len(cameras), tuple(args.window))
    next_camera = 0
    batches: list[tuple[int, float]] = []  # (frames, seconds in detect)
    while not record.finished():
        taken = []
        deadline = time.monotonic() + 0.01
        while len(taken) < args.batch and time.monotonic() < deadline:
            for _ in range(len(cameras)):  # round robin, one frame per camera per pass
                camera = cameras[next_camera]
                next_camera = (next_camera + 1) % len(cameras)
                if not camera.frames.empty():
                    taken.append((camera.index, *camera.frames.get_nowait()))
                    if len(taken) == args.batch:
                        break
            if not taken:
                time.sleep(0.001)
        if taken:
            started = time.perf_counter()
            detect(model, [image for _, _, image in taken], args.imgsz, args.conf, device, half)
            batches.append((len(taken), time.perf_counter() - started))
            now = time.time_ns()
            for index, captured, _ in taken:
                record.done(index, captured, now)
    for camera in cameras:
        camera.stop.set()
    sizes, seconds = np.array(batches or [(0, 0.0)]).T
    record.write(args.out, dropped=[camera.dropped for camera in cameras],
                 batches=len(batches), mean_batch=float(sizes.mean()), detect_ms_mean=float(1000 * seconds.mean()),
                 detect_ms_p99=float(1000 * np.percentile(seconds, 99)), detect_s_total=float(seconds.sum()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
