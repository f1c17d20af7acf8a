"""Detector: preprocess -> engine -> head decode -> confidence filter -> NMS -> Detections (host).

    detector = Detector(config, max_batch=8)
    detections = detector(batch)            # FrameBatch of host RGB (or, with a GPU engine, device NV12) frames
    detections.for_frame(0).xyxy            # (n, 4) float32 source pixels of row 0

Host frames are letterboxed on the CPU into a preallocated buffer; device NV12 frames go through
`detector_gpu.GpuDetectStep` (GPU preprocess, engine, decode and NMS on device). A GPU engine's
outputs are decoded and NMS'd on the device for host frames too (the same post-engine step). With
`workers` > 1 on a GPU engine each batch in flight takes one of that many steps, each on an engine twin
(`engine.twin()`: its own CUDA stream and buffers, the weights shared).
Either way the caller gets host Detections whose boxes are in each frame's own pixels.
"""
from __future__ import annotations

import logging
import queue
import threading
from contextlib import contextmanager
from typing import Callable

import numpy as np

from pipeline.config.models import DetectorConfig
from pipeline.config.resolve import DetectorPlan, detector_plan
from pipeline.detect import heads, nms, preprocess
from pipeline.detect.chunks import in_chunks
from pipeline.detect.engines import build_engine, read_model
from pipeline.detect.names import class_filter
from pipeline.detect.recognize import check_raw_yolox, class_names, detect_head, input_size
from pipeline.errors import EngineError
from pipeline.types import Detections, Frame, FrameBatch

log = logging.getLogger(__name__)


class Detector:
    """One model on one engine. Attributes: class_names, input_size (w, h), engine_name, engine_reason,
    max_batch, head, workers (how many threads may call it at once; host frames are safe to detect
    concurrently), queue_next (a caller may `submit` the next batch before taking this one's detections, which
    keeps a GPU busy), plan (the `DetectorPlan` it runs).

    plan: engine, batch limit and workers as `pipeline.config.resolve` decided them; without one it is
    resolved here for this machine, with `max_batch` as the largest batch the caller will pass. A
    model with a fixed batch of 1 reports max_batch = 1 and larger FrameBatches run in chunks.
    """

    def __init__(self, config: DetectorConfig, max_batch: int | None = None, *, plan: DetectorPlan | None = None):
        self.config = config
        self.plan = plan or detector_plan(config, max_batch)
        signature, metadata = read_model(self.plan.engine, config.model)
        self.signature = signature
        self.head = detect_head(signature, metadata, config.head)
        self.input_size = input_size(signature, config, metadata)
        self.class_names, names_source = class_names(signature, self.head, metadata, config.class_names)
        self._class_filter = class_filter(config.classes, self.class_names)
        self.spec = _preprocess_spec(self.head, self.input_size, config)
        self.engine = build_engine(config, self.plan)
        self.engine_name, self.engine_reason = self.engine.name, self.plan.reason
        self._gpu_engine = self.plan.on_device  # device outputs (torch, tensorrt): decoded and NMS'd there
        self.max_batch = self.engine.max_batch
        self.workers = self.plan.workers
        self.queue_next = self._gpu_engine and config.queue_next and self.workers == 1
        self._input_names = [i.name for i in signature.inputs]
        self._local = threading.local()  # input buffers per calling thread: several workers may call at once
        self._gpu_steps: queue.SimpleQueue | None = None  # GPU engines: a step per worker, when free
        self._gpu_lock = threading.Lock()
        self._twins: list = []
        self._warned_unusable: set[str] = set()
        if self.head == "yolox":
            check_raw_yolox(self._probe(), self.input_size, config.model)
        log.info(
            "detector %s: head %s, input %dx%d, %d classes (%s), engine %s, max_batch %d",
            config.model, self.head, *self.input_size, len(self.class_names), names_source,
            self.engine_reason, self.max_batch,
        )  # fmt: skip

    def __call__(self, batch: FrameBatch) -> Detections:
        """Host detections of every row of `batch` (frame_idx = row); fills batch.scale (B,) and batch.pad (B, 2).

        Host RGB frames are preprocessed on the CPU; device NV12 frames (GPU engines only) on the GPU,
        where NMS also runs before the kept boxes are copied to the host.
        """
        return self.submit(batch)()

    def submit(self, batch: FrameBatch) -> Callable[[], Detections]:
        """Start detecting `batch`; calling the result (once) waits for its detections (what `__call__` returns).

        Device NV12 frames are queued on the GPU and this returns at once, so a second batch can be queued
        behind the first before the first's detections are taken (`queue_next`); host frames, batches for twins
        (`workers` > 1) and what the GPU path cannot queue are detected when the result is asked for, so they
        never hold up an earlier batch. A batch of both (a camera decoded on the CPU, MJPEG say, in a lane of
        NVDEC cameras) is detected in two parts, each its own way, its rows put back in the batch's order.
        """
        on_device = _on_device(batch.frames)
        if on_device.any() and not self._gpu_engine:
            raise EngineError(
                f"stream '{batch.frames[int(on_device.argmax())].stream_id}': engine {self.engine_name} needs host "
                "RGB frames, got device NV12; use decode 'cpu' or a GPU engine"
            )
        if on_device.all() or not on_device.any():
            pending = self._start(batch.frames, bool(on_device.all()) and len(batch.frames) > 0)
        else:
            pending = self._start_parts(batch.frames, on_device)

        def result() -> Detections:
            detections, scale, pad = pending()
            batch.scale = scale[:, 0].copy()  # x scale; letterbox y differs by under a pixel's rounding
            batch.pad = pad
            return in_frame(detections)

        return result

    def _start(self, frames: list[Frame], on_device: bool) -> Callable[[], tuple[Detections, np.ndarray, np.ndarray]]:
        if on_device and self.queue_next:  # one thread, one step: its batches queue on its stream
            with self._gpu_step() as step:
                return step.submit(frames)
        if on_device:  # a twin is taken when the result is asked for, so each batch goes to a free one
            return lambda: self._on_a_step(frames)
        return lambda: in_chunks([f.image for f in frames], self.max_batch, self._detect_host)

    def _start_parts(self, frames: list[Frame], on_device: np.ndarray):
        parts = [(rows, self._start([frames[i] for i in rows], device))
                 for rows, device in ((np.flatnonzero(on_device), True), (np.flatnonzero(~on_device), False))]

        def pending() -> tuple[Detections, np.ndarray, np.ndarray]:
            found, scale, pad = [], np.zeros((len(frames), 2), np.float32), np.zeros((len(frames), 2), np.float32)
            for rows, part in parts:
                detections, scale[rows], pad[rows] = part()
                detections.frame_idx = rows[detections.frame_idx].astype(np.int32)
                found.append(detections)
            return Detections.concat(found), scale, pad

        return pending

    def warm_up(self) -> None:
        """Compile the GPU path's kernels now (a no-op for CPU engines), before the sources start."""
        if self._gpu_engine:
            steps = [self._gpu_steps_pool().get() for _ in range(self.workers)]
            for step in steps:
                step.warm_up()
                self._gpu_steps.put(step)

    def detect_images(self, images: list[np.ndarray]) -> tuple[Detections, np.ndarray, np.ndarray]:
        """(h, w, 3) uint8 RGB images -> (Detections with frame_idx = list index, scale (B, 2), pad (B, 2))."""
        detections, scale, pad = in_chunks(images, self.max_batch, self._detect_host)
        return in_frame(detections), scale, pad

    def _detect_host(self, images: list[np.ndarray]) -> tuple[Detections, np.ndarray, np.ndarray]:
        buffer = self._buffer(len(images))
        scale, pad = preprocess.preprocess_into(images, self.spec, buffer)
        sizes = np.asarray([preprocess.image_size(im) for im in images], np.int64)
        if self._gpu_engine:  # device outputs: decode, filter and NMS on the device, like NV12 frames
            with self._gpu_step() as step:
                return step.detect_inputs(self._inputs(buffer, sizes), sizes, scale, pad), scale, pad
        outputs = self.engine.infer(self._inputs(buffer, sizes))
        decoded = heads.decode(self.head, outputs, self.input_size, self.config.conf_threshold)
        found = postprocess(decoded, sizes, scale, pad, self.config, self._class_filter, len(self.class_names),
                            self._report_unusable)
        return found, scale, pad

    def _report_unusable(self, what: str, count: int, example) -> None:
        """Warn once per detector and kind that the model gives candidates that are dropped (`postprocess`)."""
        if what in self._warned_unusable:
            return
        self._warned_unusable.add(what)
        log.warning("detector %s: the model gave %d %s (e.g. %s) among the candidates above conf_threshold; they "
                    "are dropped (warned once). The model does not match detector.head '%s' or its %d class names: "
                    "check detector.head and detector.class_names", self.config.model, count, what, example,
                    self.head, len(self.class_names))

    def _on_a_step(self, frames: list[Frame]) -> tuple[Detections, np.ndarray, np.ndarray]:
        with self._gpu_step() as step:
            return step(frames)

    @contextmanager
    def _gpu_step(self):
        """A free step of the GPU path (pipeline.detect.detector_gpu) for one batch: only GPU engines get here."""
        steps = self._gpu_steps_pool()
        step = steps.get()
        try:
            yield step
        finally:
            steps.put(step)

    def _gpu_steps_pool(self) -> queue.SimpleQueue:
        """`workers` steps, made on first use: the first on the engine, the others on its twins."""
        with self._gpu_lock:
            if self._gpu_steps is None:
                from pipeline.detect.detector_gpu import GpuDetectStep  # noqa: PLC0415 - GPU only

                self._twins = [self.engine.twin() for _ in range(self.workers - 1)]
                self._gpu_steps = queue.SimpleQueue()
                for engine in (self.engine, *self._twins):
                    self._gpu_steps.put(GpuDetectStep(
                        self.spec, engine, self.head, self.config, self.input_size, self._class_filter,
                        self._input_names, num_classes=len(self.class_names), report=self._report_unusable))
            return self._gpu_steps

    def _buffer(self, n: int) -> np.ndarray:
        """The first n rows of this thread's (max_batch, 3, H, W) input buffer (still C-contiguous)."""
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:
            buffer = self._local.buffer = preprocess.allocate(self.max_batch, self.spec)
        return buffer[:n]

    def _inputs(self, buffer: np.ndarray, sizes: np.ndarray) -> dict[str, np.ndarray]:
        feed = {self._input_names[0]: buffer}
        if self.head == "detr" and len(self._input_names) > 1:
            feed[self._input_names[1]] = sizes
        return feed

    def sample_inputs(self, rows: int) -> dict:
        """The engine's inputs for `rows` mid-grey images already preprocessed (host or device, as the engine
        takes them): what the engine-only benchmark runs over and over."""
        sizes = np.tile(np.asarray(self.input_size, np.int64), (rows, 1))
        if self._gpu_engine:
            buffer = self.engine.input_buffer(self.engine.rows_for(rows))
            buffer.fill(0.5)
            feed = {self._input_names[0]: buffer}
            if self.head == "detr" and len(self._input_names) > 1:
                import cupy  # noqa: PLC0415 - GPU engines only

                feed[self._input_names[1]] = cupy.asarray(np.resize(sizes, (len(buffer), 2)))
            return feed
        buffer = self._buffer(rows)
        buffer.fill(0.5)
        return self._inputs(buffer, sizes)

    def _probe(self) -> np.ndarray:
        """The first output of one mid-grey image, on the host."""
        output = next(iter(self.engine.infer(self.sample_inputs(1)).values()))
        if not self._gpu_engine:
            return np.asarray(output)
        with self.engine.stream:
            return output.get()

    def close(self) -> None:
        for engine in (*self._twins, self.engine):
            engine.close()


def postprocess(decoded: heads.HeadOutput, sizes, scale, pad, config: DetectorConfig, class_filter=None,
                num_classes: int | None = None, report=None) -> Detections:
    """Confidence filter, NMS (or top-k for end-to-end heads), then source pixels: host `decoded` in,
    host Detections out (device outputs go through `detector_gpu`). sizes (B, 2) source (w, h);
    scale, pad (B, 2) from preprocessing.

    Candidates a broken or mismatched model gives are dropped before NMS: boxes that are not finite, scores
    above 1 (logits, or the wrong head), and class ids outside [0, num_classes) (no class name; -1 where the
    model's class is not a number). report(what, count, example): told what was dropped, how many and one
    offending value, per batch that had any.
    """
    boxes, scores, class_ids, rows = nms.candidates(
        decoded.boxes, decoded.scores, decoded.class_ids, config.conf_threshold, class_filter, config.max_candidates
    )
    unusable = np.zeros(len(scores), bool)
    for what, bad, values in nms.unusable(boxes, scores, class_ids, num_classes):
        if bad.any():
            unusable |= bad
            if report is not None:
                report(what, int(bad.sum()), values[bad][0].tolist())
    if unusable.any():
        usable = ~unusable
        boxes, scores, class_ids, rows = boxes[usable], scores[usable], class_ids[usable], rows[usable]
    if decoded.needs_nms:
        with np.errstate(over="ignore", invalid="ignore"):  # finite boxes near float32's limit: areas overflow
            keep = nms.batched_nms(boxes, scores, class_ids, rows, config.iou_threshold, config.max_detections)
    else:
        keep = nms.top_k(scores, rows, config.max_detections)
    boxes, scores, class_ids, rows = boxes[keep], scores[keep], class_ids[keep], rows[keep]
    if decoded.in_source:
        boxes = preprocess.clip_boxes(boxes.copy(), sizes[rows])
    else:
        with np.errstate(over="ignore"):  # a huge box overflows to inf, then is clipped to the frame
            boxes = preprocess.to_source(boxes, scale[rows], pad[rows], sizes[rows])
    return Detections(boxes, scores, class_ids, rows)


def in_frame(detections: Detections) -> Detections:
    """The detections whose boxes, clipped to their frame, keep an area: a box the model put wholly in the
    letterbox padding is clipped to a line, which overlaps nothing, so a tracker would start a track on it at
    every frame."""
    xyxy = detections.xyxy
    has_area = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    return detections if has_area.all() else detections[has_area]


_HOST = {("rgb24", True), ("avframe", False)}


def _on_device(frames: list[Frame]) -> np.ndarray:
    """(B,) bool: which frames are device NV12 (the others host RGB); EngineError for a frame that is neither."""
    kinds = [(f.pixel_format, isinstance(f.image, np.ndarray)) for f in frames]
    for frame, kind in zip(frames, kinds):
        if kind not in _HOST and kind != ("nv12", False):
            raise EngineError(f"stream '{frame.stream_id}': frames must be host RGB or device NV12, got {kind[0]} "
                              f"{'in host memory' if kind[1] else 'on the device'}")
    return np.array([kind == ("nv12", False) for kind in kinds], bool)


def _preprocess_spec(head: str, input_size: tuple[int, int], config: DetectorConfig) -> preprocess.PreprocessSpec:
    """The head's conventions, overridden by every preprocess key that is not "auto"/None."""
    defaults = heads.preprocess_defaults(head)
    p = config.preprocess
    return preprocess.PreprocessSpec(
        width=input_size[0],
        height=input_size[1],
        resize=defaults["resize"] if p.resize == "auto" else p.resize,
        align=defaults["align"],
        color=defaults["color"] if p.color == "auto" else p.color,
        scale=defaults["scale"] if p.scale is None else p.scale,
        mean=p.mean,
        std=p.std,
        pad_value=p.pad_value,
    )
