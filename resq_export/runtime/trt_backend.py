"""The TensorRT backend: a deserialised plan run through its execution context.

What the plan was built with (engine/profiles.py) decides the binding: two optimisation profiles,
prefill (up to --max-sequence tokens a call) and decode (one token), both over a cache of up to
--max-context rows. The cache is allocated once, at that capacity and the plan's batch, and every
`present.*` output is bound to the buffer of its `past.*` input: the KV attention plugin writes the
new rows in place (the aliasing the plan was built with), so nothing is copied between calls. Each
call selects the profile by its shape, sets the input shapes and addresses by tensor name and runs
`execute_async_v3` on the memory layer's stream (device.py)."""

from __future__ import annotations

import logging
import math

import numpy as np

from ..errors import ConfigError, ResQError
from ..export.spec import PAST_LENGTH
from .backend import check_reset, check_step

log = logging.getLogger(__name__)

# TensorRT's DataType names -> numpy (the graph's I/O: token ids, positions, lengths, KV codes and
# scales, logits)
DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32,
          "INT64": np.int64, "BOOL": np.bool_}
IDS, POSITIONS, LOGITS = "input_ids", "position_ids", "logits"


def _name(enum_value) -> str:
    """An enum member's name (TensorIOMode.INPUT -> "INPUT"), from either runtime's bindings."""
    return getattr(enum_value, "name", str(enum_value).rsplit(".", 1)[-1])


class TensorRTBackend:
    name = "tensorrt"
    capacity_what = "the plan's --max-context"
    batch_what = "the plan's --max-batch"

    def __init__(self, engine, memory):
        self.engine, self.memory = engine, memory
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if _name(engine.get_tensor_mode(n)) == "INPUT"]
        self.outputs = [n for n in names if n not in self.inputs]
        self.past = [n for n in self.inputs if n.startswith("past.")]
        missing = [n for n in (IDS, POSITIONS, PAST_LENGTH) if n not in self.inputs] + \
                  [n for n in [LOGITS] + [p.replace("past.", "present.", 1) for p in self.past] if n not in self.outputs]
        if missing or not self.past:
            raise ResQError(f"the plan is not a resq-export decoder: it lacks the tensors {', '.join(missing) or 'past.*'}")
        self.dtypes = {n: np.dtype(DTYPES[_name(engine.get_tensor_dtype(n))]) for n in names}
        self._check_aliases()
        self.prefill_profile, self.decode_profile = self._profiles()
        lo, _, hi = engine.get_tensor_profile_shape(IDS, self.prefill_profile)
        self.max_batch, self.max_step = int(hi[0]), int(hi[1])
        # the cache capacity every profile takes
        self.capacity = min(int(engine.get_tensor_profile_shape(self.past[0], p)[2][2])
                            for p in (self.prefill_profile, self.decode_profile))
        self.vocab = int(engine.get_tensor_shape(LOGITS)[-1])
        self.context = engine.create_execution_context()
        self._allocate()
        self.profile: int | None = None
        self.batch, self.rows = 0, 0
        self._shaped: tuple | None = None  # (profile, batch) the cache shapes were last set for

    # --- what the plan holds ---------------------------------------------------------------------
    def _check_aliases(self) -> None:
        """Where the plan says which input an output aliases, it must be the past.* of the same name."""
        ask = getattr(self.engine, "get_aliased_input_tensor", None)
        if ask is None:
            return
        for past in self.past:
            present = past.replace("past.", "present.", 1)
            got = ask(present)
            if got and got != past:
                raise ResQError(f"the plan aliases {present} to {got}, not {past}: rebuild the plan")

    def _profiles(self) -> tuple[int, int]:
        """(prefill, decode) profile indices, told apart by the token count they take: the decode
        profile takes exactly one. A plan with one profile uses it for both."""
        n = self.engine.num_optimization_profiles
        most = {p: int(self.engine.get_tensor_profile_shape(IDS, p)[2][1]) for p in range(n)}
        decode = [p for p, hi in most.items() if hi == 1]
        prefill = [p for p, hi in most.items() if hi > 1]
        if not prefill and not decode:
            raise ResQError("the plan has no optimisation profile for input_ids")
        prefill_p = prefill[0] if prefill else decode[0]
        return prefill_p, decode[0] if decode else prefill_p

    def _shape(self, name: str, batch: int, seq: int = 1) -> tuple[int, ...]:
        """The shape of an input for a call: the plan's fixed dims, batch, tokens, and the cache's
        capacity for the cache's dynamic dim."""
        dims = list(self.engine.get_tensor_shape(name))
        if name in (IDS, POSITIONS, LOGITS):
            return (batch, seq) + tuple(dims[2:])
        if name == PAST_LENGTH:
            return (batch,)
        return (batch, dims[1], self.capacity, dims[3])

    def _allocate(self) -> None:
        """Every buffer once, at the plan's largest call: the cache at (max batch, capacity), the
        tokens at (max batch, max step), the logits likewise."""
        self.buffers = {}
        for name in self.inputs + [LOGITS]:
            count = math.prod(self._shape(name, self.max_batch, self.max_step))
            self.buffers[name] = self.memory.alloc(count * self.dtypes[name].itemsize)
        for past in self.past:  # the aliasing: present.* written where past.* is read
            self.buffers[past.replace("past.", "present.", 1)] = self.buffers[past]
        other = [n for n in self.outputs if n not in self.buffers]
        if other:
            raise ResQError(f"the plan has outputs this runtime does not bind: {', '.join(other)}")
        self.cache_bytes = sum(self.buffers[p].nbytes for p in self.past)

    # --- the backend interface ---------------------------------------------------------------------
    def reset(self, batch: int, rows: int) -> None:
        check_reset(self, batch, rows)
        for past in self.past:  # rows beyond a sequence's length are masked; zeroed all the same
            self.memory.upload(self.buffers[past], np.zeros(self.buffers[past].nbytes, np.uint8))
        self.batch, self.rows = batch, rows

    def _select(self, seq: int) -> None:
        profile = self.decode_profile if seq == 1 else self.prefill_profile
        if profile == self.profile:
            return
        if not self.context.set_optimization_profile_async(profile, self.memory.stream):
            raise ResQError(f"TensorRT refused optimisation profile {profile}")
        self.profile, self._shaped = profile, None
        for name, buf in self.buffers.items():  # addresses by name, after the switch
            if not self.context.set_tensor_address(name, buf.ptr):
                raise ResQError(f"TensorRT refused the address of {name}")

    def _set_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if not self.context.set_input_shape(name, shape):
            raise ConfigError(f"the plan takes no {name} of shape {list(shape)} in profile {self.profile} "
                              f"(its --max-batch {self.max_batch}, --max-sequence {self.max_step}, "
                              f"--max-context {self.capacity})")

    def step(self, input_ids: np.ndarray, past_length: int) -> np.ndarray:
        if not self.batch:
            raise RuntimeError("step before reset")
        b, s = check_step(self.rows, input_ids, past_length, self.batch)
        if s > self.max_step:
            raise ConfigError(f"{s} tokens in one call exceed the plan's --max-sequence of {self.max_step}")
        self._select(s)
        positions = past_length + np.arange(s, dtype=np.int64)[None].repeat(b, 0)
        self.memory.upload(self.buffers[IDS], np.asarray(input_ids).astype(self.dtypes[IDS]))
        self.memory.upload(self.buffers[POSITIONS], positions.astype(self.dtypes[POSITIONS]))
        self.memory.upload(self.buffers[PAST_LENGTH], np.full(b, past_length, self.dtypes[PAST_LENGTH]))
        self._set_shape(IDS, (b, s))
        self._set_shape(POSITIONS, (b, s))
        if self._shaped != (self.profile, b):
            self._set_shape(PAST_LENGTH, (b,))
            for past in self.past:
                self._set_shape(past, self._shape(past, b))
            self._shaped = (self.profile, b)
        if not self.context.execute_async_v3(self.memory.stream):
            raise ResQError("TensorRT's execute_async_v3 failed (its log says why; run with -v)")
        row = self.vocab * self.dtypes[LOGITS].itemsize
        last = [self.memory.download(self.buffers[LOGITS], self.dtypes[LOGITS], self.vocab, (i * s + s - 1) * row)
                for i in range(b)]
        return np.stack(last).astype(np.float32)
