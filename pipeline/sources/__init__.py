"""Stream sources: PyAV demux (files, RTSP, HTTP) with CPU or NVDEC decode, sources that plugins register,
and `StreamWorker`, which reads one stream and hands its frames on."""
from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Callable

import numpy as np

from pipeline import plugins
from pipeline.config.models import StreamConfig
from pipeline.errors import ConfigError
from pipeline.sources.reader import DecodedFrame, Decoder, Reader

if TYPE_CHECKING:
    from pipeline.sources.pyav import DecoderShelf

__all__ = ["DecodedFrame", "Decoder", "Reader", "open_reader"]


def open_reader(config: StreamConfig, decoder: str = "cpu", packet_tap: Callable | None = None,
                allocate: Callable | None = None, shelf: DecoderShelf | None = None) -> Reader:
    """A reader for one pass over `config.url`; nothing is opened until its `frames()` is iterated.

    The URL's scheme picks the source (`pipeline.plugins.source_for`). A source that decodes itself is
    opened as `opener(config, packet_tap)`; a demuxing one (PyAV) as `opener(config, make_decoder,
    packet_tap, shelf)` with the decoder the plan chose for the stream: "nvdec" (`allocate` is NVDEC's
    picture allocator, see `NvdecDecoder`) or "cpu". `packet_tap(stream_id, packet)` sees every demuxed
    packet (event clips); `shelf` keeps a looped file's decoder between passes.
    """
    kind = plugins.source_for(config.url)
    opener = plugins.resolve(kind.opener)
    if kind.decodes:
        return _Checked(opener(config, packet_tap), config.id)
    if decoder == "nvdec":
        from pipeline.sources.nvdec import NvdecDecoder  # noqa: PLC0415 - needs the GPU stack

        # a camera's pictures are not held back in the decoder; a paced file, which stands in for a camera, is read
        # ahead of its pace and gains nothing, but is decoded alike so that it costs what a camera's decoder costs
        make_decoder = functools.partial(NvdecDecoder, allocate=allocate, low_latency=config.realtime)
    else:
        from pipeline.sources.decode import CpuDecoder  # noqa: PLC0415 - keeps `import pipeline.sources` light

        def make_decoder(stream, label):
            return CpuDecoder(stream, label, threads=config.decode_threads)

    return opener(config, make_decoder, packet_tap, shelf)


class _Checked:
    """A source that decodes itself (a plugin's), whose frames are checked before the pipeline takes them: one
    of another shape or type would fail every detector batch it is in, the other cameras' frames with it.
    ConfigError stops that stream alone, naming what its source gave."""

    def __init__(self, reader: Reader, stream_id: str):
        self._reader, self._stream_id = reader, stream_id
        self.live = reader.live

    def frames(self) -> Iterator[DecodedFrame]:
        for decoded in self._reader.frames():
            image = decoded.image
            if decoded.pixel_format == "rgb24" and not (
                    isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
                raise ConfigError(f"stream '{self._stream_id}': its source gave a {type(image).__name__} "
                                  f"{getattr(image, 'shape', '')} {getattr(image, 'dtype', '')} frame; a source gives "
                                  "(height, width, 3) uint8 RGB (pipeline.sources.reader.DecodedFrame)")
            yield decoded

    def counters(self) -> dict[str, int]:
        return self._reader.counters()

    def close(self) -> None:
        self._reader.close()
