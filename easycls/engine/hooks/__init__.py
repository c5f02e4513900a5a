"""Hooks: everything around the training step, called by :class:`~easycls.engine.runner.ModelRunner` at fixed
events (see :mod:`easycls.engine.hooks.base` for the order). Importing this package registers every built-in hook.
"""
from easycls.engine.hooks.base import (
                                       EVENTS,
                                       HOOKS,
                                       Hook,
                                       HookList,
                                       build_hook,
                                       check_custom_hooks,
                                       list_hooks,
                                       register_hook,
)
from easycls.engine.hooks.records import DataPreviewHook, LoggerHook, ReportHook, TensorBoardHook, require_tensorboard
from easycls.engine.hooks.training import (
                                       CalibrationHook,
                                       CheckpointHook,
                                       EarlyStopHook,
                                       EMAHook,
                                       FreezeHook,
                                       ParamSchedulerHook,
                                       ThresholdHook,
)

__all__ = ["EVENTS", "HOOKS", "Hook", "HookList", "build_hook", "check_custom_hooks", "list_hooks", "register_hook",
           "DataPreviewHook", "LoggerHook", "ReportHook", "TensorBoardHook", "require_tensorboard",
           "CalibrationHook", "CheckpointHook", "EarlyStopHook", "EMAHook", "FreezeHook", "ParamSchedulerHook",
           "ThresholdHook"]
