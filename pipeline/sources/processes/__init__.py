"""Decode processes: stream workers in child processes, their frames handed to this process.

Why: the decode threads of one process share one interpreter lock, and PyNvVideoCodec holds it while
NVDEC works, so 64 NVDEC streams in one process decode ~2,100-3,700 frames/s on a GPU whose decoders do
~5,400, and every millisecond the detector spends in Python comes out of that. In a child, each group
of streams has an interpreter lock of its own. Each child is a CUDA context of its own and the GPU
time-slices between contexts, so a child makes as few GPU calls as it can (one copy per picture).

- `supervisor.DecodeProcesses`: this process's side (children, streams added and stopped, restarts).
- `child`: the decode process itself. `messages`: what they say to each other.
- `slots`: device memory NVDEC pictures wait in until this process has copied them (CUDA IPC).
- `remote.RemoteWorker`: the `Worker` handle of a stream decoded in a child.
"""
from pipeline.sources.processes.remote import RemoteWorker
from pipeline.sources.processes.supervisor import DecodeProcesses

__all__ = ["DecodeProcesses", "RemoteWorker"]
