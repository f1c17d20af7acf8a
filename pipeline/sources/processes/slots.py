"""Device slots: where a decode process puts NVDEC pictures for the main process to copy (CUDA IPC).

Child side, `SlotPool` (one per stream): device memory the child allocates and shares once through a
CUDA IPC handle (again after a resolution change outgrows it). NVDEC writes each picture straight into
a free slot (`allocate`); a picture that found none is copied into one when it is sent (`ref`). A slot
comes back explicitly: `free` when the main process has copied it, `discard` when the worker drops
the picture unsent (an fps cap), `reclaim` at the end of every pass for pictures a stop or an error
left behind (they are handed out in display order and sent in that order, so whatever is still out
when a pass ends will never be sent).

Main side, `DeviceFrames`: opens each stream's pool once and copies slots into frame-owned arrays, so
a frame owns its memory exactly as in-process; one synchronisation covers a drained group of messages. The
pool before the newest stays mapped until the next one comes: after a resolution change, a picture that
found no slot is copied into the new pool when it is sent, between pictures still in the old one.
"""
from __future__ import annotations

import threading
from typing import Any


class SlotRef:
    """A device frame waiting in slot `slot` of pool `generation`; `handle` (CUDA IPC) comes with the
    first frame of each pool."""

    __slots__ = ("generation", "slot", "slot_bytes", "shape", "handle")

    def __init__(self, generation: int, slot: int, slot_bytes: int, shape: tuple, handle: bytes | None):
        self.generation, self.slot, self.slot_bytes, self.shape, self.handle = generation, slot, slot_bytes, shape, handle

    def __reduce__(self):
        return SlotRef, (self.generation, self.slot, self.slot_bytes, self.shape, self.handle)


class SlotPool:
    """One stream's device slots in the child. Thread-safe: the decode thread allocates, sends, discards
    and reclaims; the control thread frees what the main process has copied."""

    def __init__(self, count: int, device: int):
        self._count = count
        self._device = device
        self._cond = threading.Condition()
        self._generation = -1
        self._memory = None
        self._slot_bytes = 0
        self._free: list[int] = []
        self._retired: dict[int, list] = {}  # generation -> [memory, slots still out]
        self._handles: dict[int, bytes] = {}  # generation -> IPC handle, until a frame carries it
        self._out: dict[int, tuple[int, int, int]] = {}  # data pointer -> (generation, slot, slot bytes), unsent
        self._stream = None

    def allocate(self, rows: int, width: int) -> Any:
        """A `(rows, width) uint8` device array in a free slot for the decoder, or None when none is free."""
        import cupy  # noqa: PLC0415 - GPU stack

        with self._cond:
            self._fit(cupy, rows * width)
            if not self._free:
                return None
            slot = self._free.pop()
            ptr = self._memory.ptr + slot * self._slot_bytes
            self._out[ptr] = (self._generation, slot, self._slot_bytes)
            memory = cupy.cuda.UnownedMemory(ptr, self._slot_bytes, self._memory, self._device)
        return cupy.ndarray((rows, width), cupy.uint8, cupy.cuda.MemoryPointer(memory, 0))

    def ref(self, image: Any, timeout: float) -> SlotRef | None:
        """The slot that holds `image` for the main process: its own if the decoder wrote it into one,
        else a copy into a free one (waiting up to `timeout` s); None when none came free."""
        with self._cond:
            held = self._out.pop(image.data.ptr, None)
        if held is not None:
            generation, slot, slot_bytes = held
        else:
            import cupy  # noqa: PLC0415 - GPU stack

            with self._cond:
                self._fit(cupy, image.nbytes)
                if not self._free and not self._cond.wait_for(lambda: self._free, timeout):
                    return None
                slot = self._free.pop()
                generation, base, slot_bytes = self._generation, self._memory.ptr, self._slot_bytes
            runtime = cupy.cuda.runtime
            runtime.memcpyAsync(base + slot * slot_bytes, image.data.ptr, image.nbytes, runtime.memcpyDeviceToDevice,
                                self._stream.ptr)
            self._stream.synchronize()
        with self._cond:
            handle = self._handles.pop(generation, None)
        return SlotRef(generation, slot, slot_bytes, tuple(image.shape), handle)

    def discard(self, image: Any) -> None:
        """`image` will not be sent (dropped by an fps cap): its slot, if it has one, is free again."""
        with self._cond:
            held = self._out.pop(image.data.ptr, None)
        if held is not None:
            self.free(held[0], held[1])

    def reclaim(self) -> None:
        """A pass has ended: every picture still out will never be sent."""
        with self._cond:
            held, self._out = list(self._out.values()), {}
        for generation, slot, _ in held:
            self.free(generation, slot)

    def free(self, generation: int, slot: int) -> None:
        with self._cond:
            if generation == self._generation:
                self._free.append(slot)
                self._cond.notify()
                return
            retired = self._retired.get(generation)
            if retired is not None:
                retired[1] -= 1
                if retired[1] == 0:
                    del self._retired[generation]

    def close(self) -> None:
        """The stream is gone and nothing of it is mapped elsewhere: let go of its device memory."""
        with self._cond:
            self._memory, self._free, self._out, self._handles = None, [], {}, {}
            self._retired.clear()

    def _fit(self, cupy, nbytes: int) -> None:
        """Make sure the slots hold `nbytes` (lock held): a new pool when they do not."""
        if self._memory is not None and nbytes <= self._slot_bytes:
            return
        if self._memory is not None:
            out = self._count - len(self._free)
            if out:
                self._retired[self._generation] = [self._memory, out]
        with cupy.cuda.Device(self._device):
            if self._stream is None:
                self._stream = cupy.cuda.Stream(non_blocking=True)
            self._memory = cupy.cuda.Memory(nbytes * self._count)  # cudaMalloc: IPC needs its own allocation
        self._generation += 1
        self._slot_bytes = nbytes
        self._free = list(range(self._count))
        self._handles[self._generation] = cupy.cuda.runtime.ipcGetMemHandle(self._memory.ptr)


class DeviceFrames:
    """This process's side of the device slots: opens each pool once, copies slots into frame-owned arrays."""

    def __init__(self, device: int):
        import cupy  # noqa: PLC0415 - GPU stack

        self._cupy = cupy
        self._device = cupy.cuda.Device(device)
        with self._device:
            self._stream = cupy.cuda.Stream(non_blocking=True)
        # stream key -> {generation: base pointer}: the newest pool and the one before it, whose last pictures may
        # still come after the newest's first (a picture that found no slot is copied into the newest when sent)
        self._pools: dict[Any, dict[int, int]] = {}
        self._closing: list[int] = []
        self._freed: list[tuple[Any, int, int]] = []

    def copy_all(self, refs: list[tuple[Any, SlotRef]]) -> list[Any]:
        """Frame-owned copies of the slots `refs` [(stream key, ref)], valid once `finish` returned; a copy
        that failed (its pool could not be mapped, no device memory for the copy) is its exception in its
        place, and its slot is freed all the same: one frame is lost, not the group's. One device and stream
        context for the whole group: each CUDA call makes this thread wait for the interpreter lock again,
        behind the inference thread."""
        cupy = self._cupy
        runtime = cupy.cuda.runtime
        images: list[Any] = []
        with self._device, self._stream:
            for key, ref in refs:
                self._freed.append((key, ref.generation, ref.slot))
                try:
                    base = self._base(key, ref, runtime)
                    image = cupy.empty(ref.shape, cupy.uint8)
                    runtime.memcpyAsync(image.data.ptr, base + ref.slot * ref.slot_bytes, image.nbytes,
                                        runtime.memcpyDeviceToDevice, self._stream.ptr)
                except Exception as exc:  # noqa: BLE001 - one stream's pool or one allocation: that frame alone
                    image = exc
                images.append(image)
        return images

    def _base(self, key: Any, ref: SlotRef, runtime) -> int:
        """Where stream `key`'s pool of `ref` is mapped here (mapping it when `ref` brings its handle)."""
        pools = self._pools.setdefault(key, {})
        if ref.handle is not None:
            pools[ref.generation] = runtime.ipcOpenMemHandle(ref.handle, runtime.cudaIpcMemLazyEnablePeerAccess)
            for generation in [g for g in pools if g < ref.generation - 1]:
                self._closing.append(pools.pop(generation))  # after this group's copies have finished
        base = pools.get(ref.generation)
        if base is None:  # a child sends each pool's handle with its first frame, and its pools in order
            raise RuntimeError(f"frame of slot pool {ref.generation} of stream {key}, which is not mapped here "
                               f"(mapped: {sorted(pools)})")
        return base

    def close(self, key: Any) -> None:
        """Unmap stream `key`'s slots (call after `finish`: no copy from them is pending)."""
        pools = self._pools.pop(key, {})
        with self._device:
            for base in pools.values():
                self._cupy.cuda.runtime.ipcCloseMemHandle(base)

    def finish(self) -> list[tuple[Any, int, int]]:
        """Wait for the copies; the (stream key, generation, slot) the children may reuse."""
        self._stream.synchronize()
        with self._device:
            for base in self._closing:
                self._cupy.cuda.runtime.ipcCloseMemHandle(base)
        self._closing.clear()
        freed, self._freed = self._freed, []
        return freed
