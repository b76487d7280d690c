"""Per-block ``torch.compile``: the unit compiled is the block, not the network.

:meth:`irevnet.IRevNet.compile_blocks` sets a :class:`CompileSpec` on every block. A
block then runs two compiled functions, each compiled once per :class:`CompileSpec`
and shared by every block (module-level functions that take the block as an
argument; dynamo lifts its parameters and buffers to graph inputs):

- the forward of the block (:meth:`~irevnet.blocks.IRevBlock.forward`), in plain
  autograd, in the no-grad forward of memory-saving training and in inference;
- the core of the reverse step (:meth:`~irevnet.blocks.IRevBlock.reverse`:
  ``f = F(x2)``, ``x1 = S⁻¹(b − f)``), which :meth:`IRevNet.inverse` and the
  memory-saving backward call; with grad, AOTAutograd compiles its backward too, so
  the recompute and its vector-Jacobian product run compiled.

Blocks of the same kind (channels, stride, first) called on the same shapes share one
graph: a network compiles one graph per kind of block and mode (train with / without
grad, eval), whatever its depth. Shapes are static (``dynamic=False``): a new batch size
is a new graph rather than a slower shape-generic one.

Each graph gets a code object of its own. Dynamo keeps its cache, and counts
recompilations against ``torch._dynamo.config.recompile_limit``, per code object; one code
object for every block, shape and mode would collect a graph for each (~20 per ``cifar10``
batch size) until the limit fails a ``fullgraph`` compile. :func:`compiled` therefore
takes a key naming what selects the graph (:meth:`~irevnet.blocks.IRevBlock.graph_key`)
and compiles, per key, a copy of the function with its own code object: the number of
graphs is one set per shape, whatever else the process has run, and dynamo's limits keep
their defaults.

Dropout: with the inductor backend, random ops fall back to PyTorch's own kernels
(``fallback_random``), so compiled blocks draw the same masks from the same generator
state as eager ones: the memory-saving replay stays exact and the user's RNG advances
as in eager mode.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from .errors import IRevNetError

__all__ = [
    "CompileSpec",
    "CompileUnavailableError",
    "check_compile_support",
    "compiled",
    "eager",
    "graphs_compiled",
    "mark_step",
]

MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


_F = TypeVar("_F", bound=Callable[..., Any])


def eager(fn: _F) -> _F:
    """Decorator: ``fn`` runs eagerly (a graph break) when compiled code calls it, as with
    ``torch.compiler.disable(fn)``, without importing dynamo until something compiles.

    ``torch.compiler.disable`` imports ``torch._dynamo`` at decoration time: 2.5 s of every
    ``irevnet`` command's start on a CPU, though most never compile. Outside compilation the
    wrapper calls ``fn`` itself; while dynamo traces, ``is_compiling()`` is true and the call goes
    to torch's lazily disabled form of ``fn`` (``torch._disable_dynamo``, what torch's own modules
    use for the same reason), which dynamo runs eagerly.
    """
    lazy = getattr(torch, "_disable_dynamo", None)
    if lazy is None:  # a torch without the lazy form: disable at once
        disabled: _F = torch.compiler.disable(fn)
        return disabled
    traced = lazy(fn)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_compiling():
            return traced(*args, **kwargs)
        return fn(*args, **kwargs)

    return call  # type: ignore[return-value]


class CompileUnavailableError(IRevNetError, RuntimeError):
    """``torch.compile`` cannot work here (unsupported Python/torch, no C++ compiler, no Triton)."""


@dataclass(frozen=True)
class CompileSpec:
    """How the blocks are compiled.

    ``backend``: a ``torch.compile`` backend (``"inductor"``, the default and the fast one;
    ``"aot_eager"`` traces and runs the same graphs with eager kernels, for debugging).
    ``mode``: inductor's mode; ``"reduce-overhead"`` captures each block's graphs with
    CUDA graphs (GPU only; ignored on the CPU by PyTorch itself).
    """

    backend: str = "inductor"
    mode: str | None = None

    @property
    def cuda_graphs(self) -> bool:
        """Whether the mode captures CUDA graphs (on CUDA devices)."""
        return self.mode in ("reduce-overhead", "max-autotune")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown compile mode {self.mode!r}; use one of {', '.join(map(str, MODES))}")
        if self.mode not in (None, "default") and self.backend != "inductor":
            raise ValueError(f"compile mode {self.mode!r} needs the inductor backend, got backend={self.backend!r}")

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``torch.compile(fn)`` with this spec (static shapes, full graph)."""
        if self.backend != "inductor":
            return torch.compile(fn, backend=self.backend, dynamic=False, fullgraph=True)
        options: dict[str, Any] = {"fallback_random": True}  # eager RNG kernels: same dropout masks
        if self.mode not in (None, "default"):
            # torch.compile accepts a mode or options, not both: spell the mode out.
            from torch._inductor import list_mode_options

            options.update(list_mode_options(self.mode))
        return torch.compile(fn, backend="inductor", dynamic=False, fullgraph=True, options=options)


def check_compile_support(spec: CompileSpec, device: torch.device) -> None:
    """Raise :class:`CompileUnavailableError` with the reason when ``spec`` cannot compile on ``device``.

    Checks what fails most often, before any graph is built: dynamo's Python/platform
    support, a working C++ compiler for inductor on the CPU and Triton for inductor on
    CUDA. (A compiler that is found but broken still fails at the first call.)
    """
    from torch._dynamo.eval_frame import check_if_dynamo_supported

    try:
        check_if_dynamo_supported()
    except Exception as e:  # its own exception type varies across torch versions
        raise CompileUnavailableError(f"torch.compile is not supported here ({e}); run without compiling") from None
    if spec.backend != "inductor":
        return
    if device.type == "cpu":
        from torch._inductor import config, cpp_builder

        find_compiler = getattr(cpp_builder, "get_cpp_compiler", None) or cpp_builder._get_cpp_compiler  # type: ignore[attr-defined]  # torch < 2.5
        try:
            find_compiler()
        except Exception as e:
            raise CompileUnavailableError(
                f"torch.compile's inductor backend needs a C++ compiler on the CPU and found none "
                f"(searched {config.cpp.cxx}, PATH and $CXX: {type(e).__name__}); install g++ or clang++, "
                "or run without compiling"
            ) from None
    elif device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise CompileUnavailableError(
                "torch.compile's inductor backend needs Triton on CUDA and it is not installed or not usable "
                "(pip install triton, matching your torch), or run without compiling"
            )


def graphs_compiled() -> int:
    """Graphs torch.compile has compiled in this process (dynamo's own counter; 0 before dynamo is loaded)."""
    utils = sys.modules.get("torch._dynamo.utils")
    return 0 if utils is None else int(utils.counters["stats"]["unique_graphs"])


def mark_step(spec: CompileSpec | None, device: torch.device) -> None:
    """Tell CUDA-graph trees that a new step starts (before each training micro-batch or
    evaluation batch): the outputs of the previous step's graph replays may be reused.

    A no-op unless ``spec`` captures CUDA graphs on a CUDA ``device``.
    """
    if spec is not None and spec.cuda_graphs and device.type == "cuda":
        torch.compiler.cudagraph_mark_step_begin()


@functools.cache
def compiled(spec: CompileSpec, fn: Callable[..., Any], key: Hashable) -> Callable[..., Any]:
    """The compiled version of the block function ``fn`` for calls described by ``key``.

    One per ``(spec, fn, key)``, shared by every block whose calls have that key. Each is
    compiled from a copy of ``fn`` with a code object of its own (see the module docs), so
    its dynamo cache holds the graph of this key only (plus the rare variants dynamo guards
    on beyond it, e.g. the memory format or which inputs require grad).
    """
    fn = spec.compile(_own_code(fn, compiled.cache_info().currsize))
    if torch.__version__ < "2.5":  # (the option is the default, then deprecated, from 2.5 on)
        # Before torch 2.5 dynamo specializes on each module instance (one graph per block,
        # compile time growing with depth) unless told to trace modules' parameters as inputs.
        fn = torch._dynamo.config.patch(inline_inbuilt_nn_modules=True)(fn)
    return fn


def _own_code(fn: Callable[..., Any], index: int) -> Callable[..., Any]:
    """``fn`` with a new code object (named ``fn.__name__`` + ``index``: code objects compare by value)."""
    code = fn.__code__
    name = f"{code.co_name}_{index}"
    code = code.replace(co_name=name, co_qualname=name)
    copy = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__, copy.__module__, copy.__doc__ = fn.__kwdefaults__, fn.__module__, fn.__doc__
    return copy
