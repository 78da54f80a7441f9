"""One model, many threads: inference from any number of threads at once, training alone.

A model (or estimator) served from a threaded web server gets inference calls from
many threads at once, and may be retrained in one of them. Each object carries a
:class:`TrainingGuard`:

- inference (``predict``, ``evaluate``, ``get_state``, ``copy``...) is *use*: any
  number of threads use the object at once and never wait for each other (each call
  checks out its own workspaces);
- training and anything else that changes the parameters or the layers (``fit``,
  ``train_epoch``, ``set_state``, ``freeze``, ``replace_output``...) is *training*: one
  thread at a time. It starts at once when no other thread trains; it then waits for
  the inference calls already under way in other threads (they are short and never
  wait themselves), so none of them reads half-updated weights.
- While a thread trains, use and training from any *other* thread raise a RuntimeError
  saying so, at once: a silently wrong answer is never given, and a second fit never
  interleaves with the first. The training thread itself may use the object (a
  callback evaluating the validation data, early stopping's ``get_state``) and train
  it re-entrantly (``fit`` calls ``train_epoch`` calls ``train_step``).

The guard holds a lock: it is never pickled or copied (the objects' ``__getstate__``
leave it out, and a copy gets a new one).
"""

from __future__ import annotations

import functools
import threading

__all__ = ["TrainingGuard", "uses", "trains", "trains_model"]


class TrainingGuard:
    """Shared use by inference, exclusive use by training (see the module docstring).

    ``name`` names the guarded object in the errors ("this MLP", "this MLPClassifier").
    """

    __slots__ = ("name", "_cond", "_owner", "_depth", "_users")

    def __init__(self, name: str):
        self.name = name
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None  # ident of the training thread
        self._depth = 0  # its nesting
        self._users: dict[int, int] = {}  # thread ident -> nesting of its inference calls

    def __reduce__(self):
        raise TypeError("a TrainingGuard holds a lock and cannot be pickled or copied")

    @property
    def training(self) -> bool:
        """True while some thread trains the object."""
        return self._owner is not None

    def _refusal(self, what: str) -> RuntimeError:
        return RuntimeError(
            f"{self.name} is being trained in another thread; {what} cannot run until "
            f"that training has returned. Inference may run from any number of threads "
            f"at once, training only alone: to keep serving predictions while a model "
            f"trains, train a copy (model.copy(), copy.deepcopy(estimator)) and swap it "
            f"in when it is done."
        )

    # --- inference: shared ---------------------------------------------------------------
    def begin_use(self, what: str = "inference") -> None:
        me = threading.get_ident()
        with self._cond:
            if self._owner is not None and self._owner != me:
                raise self._refusal(what)
            self._users[me] = self._users.get(me, 0) + 1

    def end_use(self) -> None:
        me = threading.get_ident()
        with self._cond:
            n = self._users[me] - 1
            if n:
                self._users[me] = n
            else:
                del self._users[me]
                self._cond.notify_all()

    # --- training: exclusive ---------------------------------------------------------------
    def begin_training(self, what: str = "training") -> None:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return
            if self._owner is not None:
                raise self._refusal(what)
            # From here on inference from other threads is refused; the calls already
            # under way finish first (they never wait, so this wait ends).
            self._owner, self._depth = me, 1
            try:
                while any(t != me for t in self._users):
                    self._cond.wait()
            except BaseException:  # e.g. KeyboardInterrupt while waiting
                self._owner, self._depth = None, 0
                raise

    def end_training(self) -> None:
        with self._cond:
            self._depth -= 1
            if not self._depth:
                self._owner = None

    # --- as context managers -------------------------------------------------------------
    def use(self, what: str = "inference"):
        return _Section(self.begin_use, self.end_use, what)

    def train(self, what: str = "training"):
        return _Section(self.begin_training, self.end_training, what)


class _Section:
    __slots__ = ("_begin", "_end", "_what")

    def __init__(self, begin, end, what):
        self._begin, self._end, self._what = begin, end, what

    def __enter__(self):
        self._begin(self._what)
        return self

    def __exit__(self, *exc):
        self._end()
        return False


# The guard methods that open and close each kind of section.
_SECTIONS = {
    "use": (TrainingGuard.begin_use, TrainingGuard.end_use),
    "train": (TrainingGuard.begin_training, TrainingGuard.end_training),
}


def _guarded(section: str, doc: str):
    """A decorator factory: ``function(obj, ...)`` runs inside ``obj._guard.<section>()``
    (objects without a guard, duck-typed models, are passed through)."""
    begin, end = _SECTIONS[section]

    def decorator(function):
        what = f"{function.__name__}()"

        # begin/end called directly (no _Section made): an epoch call of a small
        # network pays for every microsecond of its wrapper
        @functools.wraps(function)
        def wrapper(obj, *args, **kwargs):
            guard = getattr(obj, "_guard", None)
            if guard is None:
                return function(obj, *args, **kwargs)
            begin(guard, what)
            try:
                return function(obj, *args, **kwargs)
            finally:
                end(guard)

        return wrapper

    decorator.__doc__ = doc
    return decorator


uses = _guarded("use", "Decorator: the method is inference on ``self._guard`` (shared).")
trains = _guarded(
    "train", "Decorator: the method trains or changes ``self`` (exclusive on ``self._guard``)."
)
trains_model = _guarded(
    "train", "Decorator: ``function(model, ...)`` trains ``model`` (exclusive on its guard)."
)
