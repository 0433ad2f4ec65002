"""Sub-commands of the ``x2ct`` CLI, one module each (see ``x2ct.cli``)."""
