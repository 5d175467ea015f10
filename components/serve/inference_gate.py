"""One ONNX Runtime call at a time per serving process, predictions first, background work
(explanations) guaranteed a share.

Predictions (the `InferenceBatcher`'s thread) and background work (explanations, on threads of
their own) share one session and the same cores. Two calls at once would each get part of the
cores and both be slow, so the gate lets one call run at a time:

- A background call starts once no prediction has waited or run for `IDLE_GRACE_S`. A
  prediction that arrives during it stops it (ONNX Runtime's `RunOptions.terminate`,
  honoured between graph nodes, within about a millisecond), and it runs again from the
  start later: idle time is free for background work, and predictions do not wait for it.
  (Without the grace, the gaps of a millisecond between one client's requests would each
  start a call that the next request stops: work thrown away, on the cores the predictions
  need.)
- While predictions keep the model busy, a background call still gets its turn after the
  predictions' call running now, and is not stopped, as long as background work has had no
  more than `share` of the model's time (each such call of t seconds is followed by at least
  t * (1 - share) / share seconds without one). A steady stream of predictions, even one
  client's, leaves no idle gap long enough for a whole call, and background work would
  otherwise never finish; with the share, a prediction waits at most one background call, and
  only in that share of the time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import onnxruntime as ort

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long the model must have been free of predictions before background work starts a
#: call that a prediction may stop: longer than the gaps between a busy client's requests.
IDLE_GRACE_S = 0.005


class BackgroundCancelledError(Exception):
    """The background work was cancelled (its caller timed out or went away)."""


class BackgroundWork:
    """One caller's background calls (an explanation's), cancellable together.

    Create it with `InferenceGate.background_work`; `cancel()` may be called from any thread.

    Attributes:
        cancelled: `cancel()` was called.
        calls: Calls of this work run to the end.
        preemptions: Calls of this work stopped by a prediction (and run again).
        turns: Calls run while predictions were waiting (the share's turns).
    """

    def __init__(self, gate: InferenceGate) -> None:
        self._gate = gate
        self.cancelled = False
        self.calls = 0
        self.preemptions = 0
        self.turns = 0
        self.runs: set[ort.RunOptions] = set()

    def run(self, call: Callable[[ort.RunOptions], T]) -> T:
        """Run `call(run_options)` when the gate gives background work the model.

        `call` must pass the run options to `InferenceSession.run`, so that a prediction (or
        `cancel`) can stop it; a call stopped by a prediction is made again.

        Raises:
            BackgroundCancelledError: `cancel()` was called before or during the call.
        """
        return self._gate.run_background(self, call)

    def cancel(self) -> None:
        """Stop the call running now and every later one."""
        self._gate.cancel(self)


class InferenceGate:
    """Serialises the ONNX Runtime calls of one process (see the module doc)."""

    def __init__(self, share: float) -> None:
        """Set up the gate.

        Args:
            share: The share of the model's time background work gets while predictions
                wait (0 to 1); 0 runs it only while no prediction waits or runs.
        """
        if not 0 <= share <= 1:
            raise ValueError(f"share must be between 0 and 1, got {share}")
        self.share = share
        self._state = threading.Condition()
        self._predictions = 0
        self._preemptible: set[ort.RunOptions] = set()
        self._turn_waiting = 0
        self._next_turn = 0.0
        self._idle_since = 0.0
        self._session = threading.Lock()

    @property
    def predictions(self) -> int:
        """Predictions waiting or running now."""
        return self._predictions

    def prediction_queued(self) -> None:
        """A prediction waits for the model: stop the background call running on idle time.

        Call it when the request is queued (not when its call starts), so that the background
        call is already stopping while the prediction makes its way to the thread.
        """
        with self._state:
            self._predictions += 1
            for options in self._preemptible:
                options.terminate = True

    def prediction_finished(self) -> None:
        """A prediction queued with `prediction_queued` was answered (or given up)."""
        with self._state:
            self._predictions -= 1
            if self._predictions == 0:
                self._idle_since = time.monotonic()
                self._state.notify_all()

    def run_prediction(self, call: Callable[[], T]) -> T:
        """Run a prediction's call, after a background call whose turn it is."""
        with self._state:
            while self._turn_waiting:
                self._state.wait()
        with self._session:
            return call()

    def background_work(self) -> BackgroundWork:
        """A new caller's handle on background calls."""
        return BackgroundWork(self)

    def run_background(self, work: BackgroundWork, call: Callable[[ort.RunOptions], T]) -> T:
        """See `BackgroundWork.run`."""
        while True:
            options = ort.RunOptions()
            turn = self._wait_for_model(work, options)
            started = time.monotonic()
            try:
                with self._session:
                    if options.terminate and not work.cancelled:
                        raise _PreemptedError  # a prediction came while this waited
                    started = time.monotonic()
                    result = call(options)
                    work.calls += 1
                    return result
            except Exception as e:
                if not options.terminate:
                    raise  # a real failure, not a stop
                if work.cancelled:
                    raise BackgroundCancelledError from e
                work.preemptions += 1
            finally:
                self._release(work, options, time.monotonic() - started if turn else None)

    def _wait_for_model(self, work: BackgroundWork, options: ort.RunOptions) -> bool:
        """Wait until background work may run; whether it runs as a turn (not pre-emptible).

        Raises:
            BackgroundCancelledError: `work` was cancelled.
        """
        with self._state:
            while True:
                if work.cancelled:
                    raise BackgroundCancelledError
                now = time.monotonic()
                idle_for = now - self._idle_since
                if not self._predictions and not self._turn_waiting and idle_for >= IDLE_GRACE_S:
                    self._preemptible.add(options)
                    work.runs.add(options)
                    return False
                if self.share and not self._turn_waiting and now >= self._next_turn:
                    self._turn_waiting += 1
                    work.runs.add(options)
                    work.turns += 1
                    return True
                timeouts = []
                if self.share and now < self._next_turn:
                    timeouts.append(self._next_turn - now)
                if not self._predictions:
                    timeouts.append(IDLE_GRACE_S - idle_for)
                self._state.wait(min(timeouts) if timeouts else None)

    def _release(self, work: BackgroundWork, options: ort.RunOptions, turn: float | None) -> None:
        """Forget a finished call; after a turn of `turn` seconds, set when the next may be."""
        with self._state:
            work.runs.discard(options)
            self._preemptible.discard(options)
            if turn is not None:
                self._turn_waiting -= 1
                self._next_turn = time.monotonic() + turn * (1 - self.share) / self.share
                self._state.notify_all()

    def cancel(self, work: BackgroundWork) -> None:
        """See `BackgroundWork.cancel`."""
        with self._state:
            work.cancelled = True
            for options in work.runs:
                options.terminate = True
            self._state.notify_all()


class _PreemptedError(Exception):
    """A background call was stopped before it started."""
