"""Keras models and their task specs. ``get_spec("sketch")`` returns the sketch task's spec.

The registry below maps task names to modules so that the CLI can list tasks without importing
TensorFlow; a task's module is imported on first use.
"""

from __future__ import annotations

import importlib

from rnnforge.core.errors import UserError

#: Task name -> module defining ``SPEC``. The names are the CLI's task argument everywhere.
TASK_MODULES = {
    "sketch": "rnnforge.models.sketch",
    "forecast": "rnnforge.models.forecast",
    "video": "rnnforge.models.video",
}
TASKS = tuple(TASK_MODULES)


def get_spec(task: str):
    """Return the ``TaskSpec`` of ``task``; a clear error lists the known tasks."""
    if task not in TASK_MODULES:
        raise UserError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    return importlib.import_module(TASK_MODULES[task]).SPEC
