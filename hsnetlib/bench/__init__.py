"""Measuring HSNet: Table 4 (:mod:`.kernels`), per-episode inference latency (:mod:`.inference`) and the
training step (:mod:`.training`), each against the reference computation timed in the same process.

Conventions, stated once:
- The baseline is :class:`hsnetlib.model.HSNet` itself: the official code's computation, op for op
  (benchmarks/RESULTS.md says how its time was checked against the official code).
- FLOPs come from ``torch.utils.flop_counter``, which counts one multiply-add as **2** FLOPs; the
  tables also give GMACs (= GFLOPs / 2), the unit Table 4 uses (notebook 2).
- Time: median of ``repeats`` rounds after a warm-up round, the paths interleaved round by round
  (:func:`.timing.time_paths`) so that all see the same machine load; CUDA-synchronized on GPU.
- Memory: CUDA: peak allocated during one call. CPU: the rise of the process's peak resident set
  during one call, measured in a fresh process per path.
- Inputs: random images with support masks of one of :data:`.masks.MASK_KINDS` (the fast path's gain
  depends on the mask's extent).
"""
