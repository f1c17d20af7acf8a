"""Stream sources: PyAV demux (files, RTSP), CPU or NVDEC decode, the synthetic world, and `StreamWorker`."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable

from pipeline.config.models import StreamConfig
from pipeline.errors import ConfigError
from pipeline.sources.reader import DecodedFrame, Decoder, Reader, mask_url

if TYPE_CHECKING:
    from pipeline.sources.pyav import DecoderShelf

__all__ = ["DecodedFrame", "Decoder", "Reader", "mask_url", "open_reader"]


def open_reader(config: StreamConfig, packet_tap: Callable | None = None, allocate: Callable | None = None,
                shelf: DecoderShelf | None = None) -> Reader:
    """A reader for one pass over `config.url`; nothing is opened until its `frames()` is iterated.

    `synthetic://...` gives the synthetic world; anything else goes through PyAV with the decoder
    `config.decode` names ("auto" = NVDEC when `pipeline.sources.nvdec.is_available()`, else CPU).
    `allocate` is NVDEC's picture allocator (`NvdecDecoder`); `shelf` keeps a looped file's decoder
    between passes (`pipeline.sources.pyav.DecoderShelf`). Raises `ConfigError` when
    `decode: nvdec` is asked for where NVDEC cannot run (retrying won't help).
    """
    if config.url.startswith("synthetic://"):
        from pipeline.sources.synthetic import SyntheticReader  # noqa: PLC0415 - optional world module

        return SyntheticReader(config.url, stream_id=config.id, packet_tap=packet_tap)
    from pipeline.sources.decode import CpuDecoder  # noqa: PLC0415 - keeps `import pipeline.sources` light
    from pipeline.sources.pyav import PyAvReader  # noqa: PLC0415

    def make_decoder(stream, label):
        return CpuDecoder(stream, label, threads=config.decode_threads)

    if config.decode != "cpu":
        available, reason = _nvdec_status()
        if available:
            from pipeline.sources.nvdec import NvdecDecoder  # noqa: PLC0415 - needs the GPU stack

            make_decoder = functools.partial(NvdecDecoder, allocate=allocate)
        elif config.decode == "nvdec":
            raise ConfigError(f"stream '{config.id}': decode 'nvdec' cannot run here ({reason}); "
                              "set decode: cpu (or auto) for this stream, or install the gpu extra")
    return PyAvReader(config, packet_tap=packet_tap, make_decoder=make_decoder, shelf=shelf)


def _nvdec_status() -> tuple[bool, str]:
    try:
        from pipeline.sources.nvdec import nvdec_available  # noqa: PLC0415 - needs the GPU stack
    except ImportError as exc:
        return False, f"the NVDEC decoder cannot be imported ({exc})"
    return nvdec_available()
