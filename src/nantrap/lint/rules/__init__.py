"""Lint rules: one module per rule, each a ``Rule`` subclass; importing this package
imports (and so registers) every module in it."""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
