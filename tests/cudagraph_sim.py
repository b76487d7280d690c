"""A CPU stand-in for the memory rule of CUDA-graph trees (``torch.compile(mode="reduce-overhead")``).

CUDA graphs replay into a memory pool: the outputs of a step's graphs (forward and
backward, parameter gradients included) live there, and the graphs of the next step,
after ``torch.compiler.cudagraph_mark_step_begin()``, overwrite them. Code is safe when
nothing it still uses was produced by a graph before the last step mark.

:class:`CudaGraphSim` makes that rule visible on the CPU. Its ``backend`` (AOTAutograd
with eager kernels) records every tensor a compiled forward or backward graph returns
that does not alias one of its inputs; :meth:`CudaGraphSim.mark` stands for the step
mark and overwrites all of them with NaN, as the next replay would. A ``.grad`` kept from
a graph output across a mark, or a block output read after one, then turns the results
into NaN. The real gate (CUDA devices, CUDA-graph modes) is tested on its own; here the
code under test has its ``mark_step`` replaced by :meth:`CudaGraphSim.mark_step`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torch._dynamo.backends.common import aot_autograd


class CudaGraphSim:
    def __init__(self) -> None:
        # The storage of every graph output since the last mark: held (its memory is the pool's) without holding
        # the tensor, whose reference count decides, e.g., whether autograd steals it as a .grad.
        self.pool: list[torch.UntypedStorage] = []
        self.log: list[str] = []  # "mark" / "graph" events, in order
        self.backend = aot_autograd(fw_compiler=self._compiler, bw_compiler=self._compiler)

    def _compiler(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[[list[Any]], Any]:
        def run(args: list[Any]) -> Any:
            inputs = {t.untyped_storage().data_ptr() for t in args if isinstance(t, Tensor)}
            outs = torch.fx.Interpreter(gm).boxed_run(args)
            self.log.append("graph")
            self.pool.extend(t.untyped_storage() for t in outs if isinstance(t, Tensor) and t.is_floating_point()
                             and t.untyped_storage().data_ptr() not in inputs)
            return outs

        run._boxed_call = True  # type: ignore[attr-defined]
        return run

    def mark(self) -> None:
        """A new step: the previous step's graph outputs are overwritten."""
        self.log.append("mark")
        with torch.no_grad():
            for storage in self.pool:
                storage.fill_(0xFF)  # all bits set: NaN in every floating dtype
        self.pool.clear()

    def mark_step(self, spec: Any, device: torch.device) -> None:
        """Drop-in for :func:`irevnet.compile.mark_step` (whatever the device)."""
        if spec is not None:
            self.mark()

    def steps(self) -> list[int]:
        """Number of graph runs between consecutive marks (the first entry: before the first mark)."""
        counts = [0]
        for event in self.log:
            if event == "mark":
                counts.append(0)
            else:
                counts[-1] += 1
        return counts
