"""Fakes shipped with the package, for tests of the pipeline as a whole (the component tier) and for
trying a deployment without cameras or a model:

    plugins: [pipeline.testing]
    streams: [{id: cam-1, url: "fake://cam-1?fps=25&live=1"}]
    detector: {model: fake, engine: fake}

- `fake://NAME?fps=25&frames=N&size=64x48&live=1`: a camera (or, with live=0, a file) showing a bright
  square that moves one step per frame; frame i has pts i / fps. Registered on import. `stall_at=N&stall_s=S`:
  it hangs for S seconds before frame N (a stalled camera), then goes on.
- engine `fake`: finds that square (one box per frame, class 0) on the CPU; several batches may run at
  once, each taking a few milliseconds that vary with its content, so hand-off order is exercised. While
  the file named by `$STREAMWEAVE_FAKE_ENGINE_FAILS_WHILE` exists, it fails every batch (a detector that broke).
- `RecordingSink`, `HangingSink`: frame sinks that record what they get, or hang until released.
- `MarkEveryNth`: a `stages:` plugin that marks every n-th frame of its stream with an event.
"""
from pipeline import plugins
from pipeline.testing.engine import FAKE_ENGINE
from pipeline.testing.sinks import HangingSink, MarkEveryNth, RecordingSink
from pipeline.testing.source import FAKE_SOURCE, FakeReader

__all__ = ["FakeReader", "HangingSink", "MarkEveryNth", "RecordingSink"]

plugins.register_source(FAKE_SOURCE)
plugins.register_engine(FAKE_ENGINE)
