"""The hook protocol, the registry of hook names and the ordered list a runner calls.

A run calls, in this order::

    before_run
    per epoch:  before_train_epoch
                per batch: before_train_iter, (the step), after_train_iter
                after_train_epoch, before_val_epoch, (validation), after_val_epoch(metrics)
    after_run

Hooks run in ascending ``priority`` (lower first); equal priorities keep the order given. A hook with state
returns it from ``state_dict`` and gets it back through ``load_state_dict`` when a run resumes from ``last.pth``.
Users add hooks with the config key ``custom_hooks``: a registered name, ``dict(type="Name", **kwargs)`` or a
:class:`Hook` instance (a class defined in ``config.py`` itself works).
"""
import inspect
import logging
from typing import Dict, List, Sequence

from easycls.core.errors import ConfigError

log = logging.getLogger(__name__)

HOOKS: Dict[str, type] = {}
EVENTS = ("before_run", "before_train_epoch", "before_train_iter", "after_train_iter", "after_train_epoch",
          "before_val_epoch", "after_val_epoch", "after_run")


class Hook:
    """Base class: every event is a no-op; override the ones you need. ``runner`` is the :class:`ModelRunner`."""

    priority = 50

    def before_run(self, runner) -> None:
        """Once, before the first epoch (after a resume, before the first remaining epoch)."""

    def before_train_epoch(self, runner) -> None:
        """At the start of each epoch; ``runner.epoch`` is its 0-based number. A run resumed from a Ctrl-C in the
        middle of an epoch calls it again for that epoch, before its remaining batches."""

    def before_train_iter(self, runner, batch_idx: int, batch) -> None:
        """Before each training batch (a :class:`~easycls.data.Batch` of uint8 images)."""

    def after_train_iter(self, runner, batch_idx: int, batch, outputs: dict) -> None:
        """After each training batch; ``outputs`` has ``loss``, ``logits``, ``labels`` and ``stepped``."""

    def after_train_epoch(self, runner) -> None:
        """After the last training batch of the epoch."""

    def before_val_epoch(self, runner) -> None:
        """Before validation."""

    def after_val_epoch(self, runner, metrics: dict) -> None:
        """After validation; ``metrics`` is the epoch's row of ``results.csv``."""

    def after_run(self, runner) -> None:
        """Once, when training ends (the last epoch, or an early stop)."""

    def state_dict(self) -> dict:
        """What must survive a resume; saved in ``last.pth``."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""


def register_hook(cls: type) -> type:
    """Class decorator: make a :class:`Hook` subclass usable by name in ``custom_hooks``."""
    if not (isinstance(cls, type) and issubclass(cls, Hook)):
        raise TypeError(f"register_hook takes a Hook subclass, got {cls!r}")
    HOOKS[cls.__name__] = cls
    return cls


def list_hooks() -> List[str]:
    """The names that ``custom_hooks`` accepts."""
    return sorted(HOOKS)


def _unknown_hook(name) -> ConfigError:
    return ConfigError(f"unknown hook {name!r} in custom_hooks; registered hooks: {', '.join(list_hooks())} "
                       f"(or give a Hook instance)")


def check_custom_hooks(items) -> None:
    """Raise a one-line :class:`ConfigError` for an item of ``custom_hooks`` that cannot become a hook: an unknown
    name, an argument the hook does not take, or a value its ``__init__`` refuses. Names and dicts are built once
    to find out, so a hook's ``__init__`` should only check and store its settings (work starts in ``before_run``).
    """
    for item in items:
        build_hook(item)


def build_hook(item) -> Hook:
    """A :class:`Hook` from a registered name, ``dict(type=name, **kwargs)`` or a Hook instance."""
    if isinstance(item, Hook):
        return item
    name = item.get("type") if isinstance(item, dict) else item
    if not isinstance(name, str):
        raise ConfigError(f"custom_hooks item {item!r} is not a hook name, a dict(type=...) or a Hook instance")
    if name not in HOOKS:
        raise _unknown_hook(name)
    kwargs = {k: v for k, v in item.items() if k != "type"} if isinstance(item, dict) else {}
    signature = inspect.signature(HOOKS[name])
    try:
        signature.bind(**kwargs)
    except TypeError as exc:  # an unknown or missing argument: name the ones the hook takes
        raise ConfigError(f"custom_hooks item {item!r}: {name} {exc}; its arguments: "
                          f"{', '.join(signature.parameters) or 'none'}") from None
    try:
        return HOOKS[name](**kwargs)
    except ValueError as exc:  # ConfigError included: a value the hook refuses
        raise ConfigError(f"custom_hooks item {item!r}: {exc}") from None


class HookList:
    """Hooks by ascending priority (``sorted`` is stable: equal priorities keep their order), called by event.

    Only the events a hook overrides are called, so the no-op ones cost nothing per iteration.
    """

    def __init__(self, hooks: Sequence[Hook] = ()):
        self.hooks = sorted(hooks, key=lambda hook: hook.priority)
        self._bound = {event: [getattr(h, event) for h in self.hooks
                               if getattr(type(h), event) is not getattr(Hook, event)] for event in EVENTS}

    def __iter__(self):
        return iter(self.hooks)

    def call(self, event: str, runner, *args) -> None:
        for method in self._bound[event]:
            method(runner, *args)

    def names(self) -> List[str]:
        """A unique name per hook (its class name, with ``.1``, ``.2`` ... for repeats): the keys of its state."""
        names = []
        for hook in self.hooks:
            base = type(hook).__name__
            names.append(base if base not in names else f"{base}.{sum(n.split('.')[0] == base for n in names)}")
        return names

    def state_dict(self) -> dict:
        return {name: hook.state_dict() for name, hook in zip(self.names(), self.hooks)}

    def load_state_dict(self, saved: dict) -> None:
        """Hand each hook its saved state; a hook the saved run did not have keeps its fresh state."""
        for name, hook in zip(self.names(), self.hooks):
            if name in saved:
                hook.load_state_dict(saved[name])
