"""Model files made from a shared one, as other exporters write them."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from pipeline.detect import heads


def decoding_yolox(raw_model: Path, path: Path, input_wh: tuple[int, int]) -> Path:
    """`raw_model`, a raw YOLOX, with YOLOX's own decode appended, as `--decode_in_inference` exports it."""
    import onnx  # noqa: PLC0415 - a test dependency of the torch engine's conversion
    from onnx import helper, numpy_helper  # noqa: PLC0415

    model = onnx.load(raw_model)
    graph, out = model.graph, model.graph.output[0].name
    next(n for n in graph.node if out in n.output).output[:] = ["raw"]
    grid, stride = heads.yolox_grid(*input_wh)
    starts = {"s0": 0, "s2": 2, "s4": 4, "end": 1 << 30, "ax": 2}
    indices = {name: np.asarray([i], np.int64) for name, i in starts.items()}
    for name, value in {"grid": grid[None], "stride": stride[None], **indices}.items():
        graph.initializer.append(numpy_helper.from_array(value, name))
    graph.node.extend([
        helper.make_node("Slice", ["raw", "s0", "s2", "ax"], ["xy"]),
        helper.make_node("Slice", ["raw", "s2", "s4", "ax"], ["wh"]),
        helper.make_node("Slice", ["raw", "s4", "end", "ax"], ["rest"]),
        helper.make_node("Add", ["xy", "grid"], ["cells"]), helper.make_node("Mul", ["cells", "stride"], ["centres"]),
        helper.make_node("Exp", ["wh"], ["sizes"]), helper.make_node("Mul", ["sizes", "stride"], ["pixels"]),
        helper.make_node("Concat", ["centres", "pixels", "rest"], [out], axis=2)])
    onnx.save(model, path)
    return path


def square_frame(clip: Path) -> np.ndarray:
    """The top-left square of the first frame of `clip`, (side, side, 3) uint8 RGB: it letterboxes without padding,
    which heads of different conventions place apart."""
    with av.open(str(clip)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    side = min(frame.shape[:2])
    return np.ascontiguousarray(frame[:side, :side])
