"""Device slots on a host-memory stand-in for cupy (the slot logic, not CUDA): across a resolution change the
pictures of one decode call may be sent as pools 0, 1, 0, 1, and the main process copies them all; a copy that
fails loses its own frame only."""
from __future__ import annotations

import itertools
import queue
import sys
import types

import pytest

from pipeline.config.models import StreamConfig
from pipeline.sources.processes import messages as msg
from pipeline.sources.processes.remote import RemoteWorker
from pipeline.sources.processes.slots import DeviceFrames, SlotPool
from pipeline.sources.processes.supervisor import DecodeProcesses


class _Memory:
    """A device allocation: a distinct address, no bytes (copies are not what is tested)."""

    addresses = itertools.count(1 << 20, 1 << 20)

    def __init__(self, nbytes: int):
        self.ptr, self.size = next(self.addresses), nbytes


class _Pointer:
    def __init__(self, memory, offset: int):
        self.ptr = memory.ptr + offset


class _Array:
    def __init__(self, shape, dtype=None, memptr=None):
        self.shape, self.nbytes = shape, shape[0] * shape[1]
        self.data = memptr or _Pointer(_Memory(self.nbytes), 0)


class _Context:
    ptr = 0

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def synchronize(self):
        pass


@pytest.fixture
def cupy(monkeypatch):
    """A stand-in `cupy` whose IPC handle is the allocation's address; `opened` and `closed` record mappings."""
    runtime = types.SimpleNamespace(memcpyDeviceToDevice=3, cudaIpcMemLazyEnablePeerAccess=1, opened=[], closed=[],
                                    memcpyAsync=lambda *args: None, ipcGetMemHandle=lambda ptr: ptr.to_bytes(8, "little"))
    runtime.ipcOpenMemHandle = lambda handle, flags: runtime.opened.append(int.from_bytes(handle, "little")) or runtime.opened[-1]
    runtime.ipcCloseMemHandle = runtime.closed.append
    module = types.ModuleType("cupy")
    module.uint8, module.ndarray, module.empty = "uint8", _Array, lambda shape, dtype: _Array(shape)
    module.cuda = types.SimpleNamespace(Memory=_Memory, UnownedMemory=lambda ptr, size, owner, device: types.SimpleNamespace(ptr=ptr),
                                        MemoryPointer=_Pointer, Device=_Context, Stream=_Context, runtime=runtime)
    monkeypatch.setitem(sys.modules, "cupy", module)
    return module


def test_pictures_of_the_pool_before_a_resolution_change_still_arrive_after_its_first_new_one(cupy):
    pool, main, key = SlotPool(count=3, device=0), DeviceFrames(0), (0, 0)
    inflight = [pool.ref(pool.allocate(348, 424), 0.0) for _ in range(2)]  # two of pool 0's three slots are out
    main.copy_all([(key, ref) for ref in inflight])
    main.finish()
    # A decode call whose packet brings a larger picture drains the old size first: the last free slot, then a
    # picture that found none (the decoder's own memory), then a slot the main process gave back meanwhile.
    first = pool.allocate(348, 424)
    slotless = pool.allocate(348, 424) or cupy.empty((348, 424), cupy.uint8)
    pool.free(inflight[0].generation, inflight[0].slot)
    last_old = pool.allocate(348, 424)
    larger = pool.allocate(696, 848)  # a new pool, generation 1
    refs = [pool.ref(image, 0.0) for image in (first, slotless, last_old, larger)]  # sent in display order
    assert [r.generation for r in refs] == [0, 1, 0, 1]  # the slotless one was copied into the newest pool
    assert len(main.copy_all([(key, ref) for ref in refs])) == 4
    freed = main.finish()
    assert [(g, s) for _, g, s in freed] == [(r.generation, r.slot) for r in refs]
    assert cupy.cuda.runtime.closed == []  # pool 0 stays mapped: its pictures may still come

    main.copy_all([(key, pool.ref(pool.allocate(1392, 1696), 0.0))])  # generation 2: pool 0 is let go
    main.finish()
    assert cupy.cuda.runtime.closed == [cupy.cuda.runtime.opened[0]]
    main.close(key)
    assert sorted(cupy.cuda.runtime.closed) == sorted(cupy.cuda.runtime.opened)


def test_a_frame_whose_copy_fails_is_lost_alone_and_its_slot_comes_back(cupy):
    """One stream's picture from a pool never mapped here (its handle lost) shares a drained group with another
    stream's: the other is copied, the failed one is counted on its stream, and both slots go back."""
    good, bad = SlotPool(count=2, device=0), SlotPool(count=2, device=0)
    good_ref = good.ref(good.allocate(348, 424), 0.0)
    bad_ref = bad.ref(bad.allocate(348, 424), 0.0)
    bad_ref.handle = None  # as if the frame that carried the pool's handle never arrived
    processes = DecodeProcesses(types.SimpleNamespace(), max_children=1)
    processes.close()  # its threads end: what the receiver would send the children stays in `sent`
    processes._outbox = sent = queue.SimpleQueue()
    processes._copies = DeviceFrames(0)
    child = types.SimpleNamespace(number=0, workers={
        index: RemoteWorker(StreamConfig(id=name, url="cam.mp4"), "nvdec", 0.0, lambda w: None)
        for index, name in enumerate(("good", "bad"))})
    received = [(child, msg.FrameMsg(index, 1, 0, 0, 424, 232, "nv12", ref, 0, 0))
                for index, ref in enumerate((good_ref, bad_ref))]
    frames = processes._frames(received)
    freed = processes._copies.finish()
    assert [f.stream_id if f else None for f in frames] == ["good", None]
    # a file's frame is sent against a credit its ring gives back once the frame leaves it: this one never
    # enters the ring, so its credit goes back at once (else a few failures stall the file for good)
    assert sent.get_nowait() == ("credit", 0, 1, 1) and sent.empty()
    assert sorted((key[1], g, s) for key, g, s in freed) == [(0, good_ref.generation, good_ref.slot),
                                                             (1, bad_ref.generation, bad_ref.slot)]
    assert child.workers[0].stats()["dropped_copy"] == 0
    assert child.workers[1].stats()["dropped_copy"] == 1
