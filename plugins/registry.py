"""One registry type for every plug-in: a config names a function, and may give it keyword parameters.

A plug-in's parameters are read from its signature (keyword parameters with defaults), so a typo in a
config is an error at config time, naming the parameters that exist, instead of a TypeError in a worker
after start-up. This module imports nothing from the project: every package can use it.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True, eq=False)
class Plugin:
    """A registered function and what its signature says about it; calling the plug-in calls ``fn``."""

    kind: str
    name: str
    fn: Callable[..., Any]
    params: dict[str, Any]  # keyword parameters with defaults -> defaults: what a config may set
    doc: str = ""
    accepts_any_param: bool = False  # fn takes **kwargs
    validate: Callable[[dict[str, Any]], None] | None = None  # ValueError for bad values (defaults + given)
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. a reward's many-at-once ``batch`` version

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def check_params(self, params: Mapping[str, Any] | None) -> None:
        """ValueError, in one line, for a parameter the function does not take or a value ``validate`` refuses."""
        params = {} if params is None else params
        if not isinstance(params, Mapping):
            raise ValueError(f"{self.kind} {self.name!r}: parameters must be a mapping, got {type(params).__name__}")
        unknown = [] if self.accepts_any_param else sorted(set(params) - set(self.params))
        if unknown:
            listed = ", ".join(repr(p) for p in unknown)
            known = ", ".join(sorted(self.params)) or "none"
            raise ValueError(f"{self.kind} {self.name!r} has no parameter{'s' if len(unknown) > 1 else ''} {listed}; "
                             f"its parameters: {known}{_did_you_mean(unknown[0], self.params)}")
        if self.validate is not None:
            self.validate({**self.params, **params})


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry:
    """Name -> ``Plugin`` for one kind of plug-in (e.g. "advantage estimator").

    ``args``: how many positional arguments every plug-in of the kind is called with (checked when it is
    registered). ``dotted_paths``: ``get("package.module:function")`` imports and wraps that function.
    """

    def __init__(self, kind: str, *, args: int = 0, dotted_paths: bool = False):
        self.kind, self.args, self.dotted_paths = kind, args, dotted_paths
        self._plugins: dict[str, Plugin] = {}
        self._loaded: dict[str, Plugin] = {}  # dotted paths already imported

    def register(self, name: str, *, validate: Callable[[dict[str, Any]], None] | None = None, **extras: Any):
        """Decorator registering ``fn`` under ``name``; the function itself is returned unchanged."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string")

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            existing = self._plugins.get(name)
            # The same module imported twice (under two names) registers again; another function must not
            # silently replace one, or the active plug-in would depend on import order.
            if existing is not None and existing.fn.__qualname__ != fn.__qualname__:
                raise ValueError(f"{self.kind} {name!r} is already registered by "
                                 f"{existing.fn.__module__}.{existing.fn.__qualname__}")
            self._plugins[name] = self._wrap(name, fn, validate, extras)
            return fn

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plug-in registered for a while, e.g. by a test)."""
        self._plugins.pop(name, None)

    def _wrap(self, name: str, fn: Callable[..., Any], validate, extras: dict[str, Any]) -> Plugin:
        parameters = inspect.signature(fn).parameters.values()
        positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        takes_varargs = any(p.kind is p.VAR_POSITIONAL for p in parameters)
        if len(positional) < self.args and not takes_varargs:
            raise TypeError(f"{self.kind} {name!r} must take {self.args} positional arguments, "
                            f"takes {len(positional)}")
        params = {p.name: p.default for p in parameters
                  if p.default is not p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        return Plugin(self.kind, name, fn, params, inspect.cleandoc(fn.__doc__ or ""),
                      any(p.kind is p.VAR_KEYWORD for p in parameters), validate, dict(extras))

    def get(self, name: str) -> Plugin:
        """The plug-in named ``name``; KeyError listing the registered names (and the closest) if none."""
        if name in self._plugins:
            return self._plugins[name]
        if self.dotted_paths and isinstance(name, str) and ":" in name:
            if name not in self._loaded:
                self._loaded[name] = self._load(name)
            return self._loaded[name]
        raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names()) or 'none'}"
                       f"{_did_you_mean(str(name), self.names())}")

    def _load(self, path: str) -> Plugin:
        module_name, _, attr = path.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as error:
            raise KeyError(f"cannot load {self.kind} {path!r}: {error}") from None
        # A registered function named by its path is that plug-in (its validator and extras included).
        registered = [plugin for plugin in self._plugins.values() if plugin.fn is fn]
        return registered[0] if registered else self._wrap(path, fn, None, {})

    def check(self, name: str, params: Mapping[str, Any] | None) -> Plugin:
        """The plug-in, once ``params`` are known to suit it: KeyError for the name, ValueError for a parameter."""
        plugin = self.get(name)
        plugin.check_params(params)
        return plugin

    def names(self) -> list[str]:
        """Registered names, sorted (dotted paths loaded on demand are not listed)."""
        return sorted(self._plugins)

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def __iter__(self):
        return iter(self.names())

    __getitem__ = get

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
