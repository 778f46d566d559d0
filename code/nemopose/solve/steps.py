"""The pose solver's Adam steps over one chunk of problems: eager, or one CUDA graph replayed.

:class:`AdamSteps` runs ``loss = loss_fn(); zero_grad; loss.sum().backward(); Adam.step()``.

- On the CPU: plain Adam with a Python-number learning rate (the reference path).
- On CUDA: fused Adam with ``capturable=True`` and the learning rate a device tensor, so a
  step reads nothing from the host and the host reads nothing back: the CPU runs ahead of the
  GPU, and the whole step (projection, the Triton kernels, backward, Adam) can be captured in
  a CUDA graph (``graphs=True``). The first :data:`WARMUP_STEPS` steps run eagerly on a side
  stream (what capture needs: kernels compiled, the Triton check done, Adam's state made);
  the next step is captured once and replayed for every later step, and for every later
  chunk of the same shape (:meth:`AdamSteps.restart`). A capture that fails (or a scorer
  that fell back to the PyTorch backend, whose step synchronises) leaves the steps eager.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

log = logging.getLogger(__name__)

__all__ = ["GRAPH_MODES", "WARMUP_STEPS", "AdamSteps"]

GRAPH_MODES = ("auto", "off")
WARMUP_STEPS = 3


class AdamSteps:
    """Adam over ``params`` minimising ``loss_fn().sum()``, one :meth:`step` at a time.

    Args:
        loss_fn: ``() -> (N,)`` losses of the current parameters (differentiable).
        params: the leaf tensors optimised.
        lr, betas: Adam's settings (``lr`` the first value; see :meth:`set_lr`).
        device: where the parameters live.
        graphs: capture the step in a CUDA graph (on CUDA only; ignored elsewhere).
        can_capture: ``() -> reason or None``, asked once before the capture; a reason
            keeps the steps eager (e.g. the scorer fell back to PyTorch, which synchronises).
    """

    def __init__(self, loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor], lr: float,
                 betas: tuple[float, float], device: torch.device, *, graphs: bool = False,
                 can_capture: Callable[[], str | None] = lambda: None) -> None:
        self.loss_fn = loss_fn
        self.params = params
        self.cuda = device.type == "cuda"
        self.device = device
        self._lr_value = float(lr)
        if self.cuda:
            self.lr = torch.full((), float(lr), dtype=torch.float32, device=device)
            self.optim = torch.optim.Adam(params, lr=self.lr, betas=betas, fused=True, capturable=True)
        else:
            self.lr = None
            self.optim = torch.optim.Adam(params, lr=float(lr), betas=betas)
        self.want_graph = graphs and self.cuda
        self.can_capture = can_capture
        self.graph: torch.cuda.CUDAGraph | None = None
        self._graph_losses: torch.Tensor | None = None
        self.failure: str | None = None        # why the capture failed (then: eager)
        self.steps_done = 0

    @property
    def mode(self) -> str:
        """"graph" when the steps replay a CUDA graph, else "eager"."""
        return "graph" if self.graph is not None else "eager"

    def set_lr(self, value: float, running: torch.Tensor | None = None) -> None:
        """The learning rate of the next steps; on CUDA written into the device tensor
        (no copy from the host), times ``running`` (a device 0/1 flag: 0 freezes the
        parameters, see the solver's early stop) when given."""
        if self.lr is None:
            for group in self.optim.param_groups:
                group["lr"] = value
        elif running is not None:
            torch.mul(running, value, out=self.lr)
            self._lr_value = None
        elif value != self._lr_value:
            self.lr.fill_(value)
            self._lr_value = value

    def _eager_step(self) -> torch.Tensor:
        losses = self.loss_fn()
        self.optim.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.optim.step()
        return losses

    def step(self) -> torch.Tensor:
        """One Adam step; returns the (N,) losses before it (in graph mode the graph's own
        output buffer, overwritten by the next step: clone what you keep)."""
        self.steps_done += 1
        if not self.want_graph:
            return self._eager_step()
        if self.graph is None and self.steps_done > WARMUP_STEPS and self.failure is None:
            self._capture()
        if self.graph is not None:
            self.graph.replay()
            return self._graph_losses
        # warm-up before a capture: on a side stream, as CUDA graphs need
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            losses = self._eager_step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        return losses

    def _capture(self) -> None:
        reason = self.can_capture()
        if reason is not None:
            self.failure = reason
            return
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                losses = self._eager_step()
        except Exception as exc:      # e.g. a synchronising operation in the step
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.failure = f"capture failed: {first}"
            self.optim.zero_grad(set_to_none=True)
            return
        self.graph, self._graph_losses = graph, losses

    def restart(self, values: list[torch.Tensor]) -> None:
        """Start over from new parameter values (same shapes), keeping the captured graph:
        the parameters are overwritten in place and Adam's state is zeroed (as new)."""
        with torch.no_grad():
            for p, v in zip(self.params, values):
                p.copy_(v)
            for state in self.optim.state.values():
                for value in state.values():
                    if isinstance(value, torch.Tensor):
                        value.zero_()
        self.steps_done = 0 if self.graph is None else WARMUP_STEPS
