"""The migration path: renamed names, moved modules and configuration keys keep working for one release (until
deft6g REMOVED_IN) and warn with what replaced them. CHANGELOG.md ("Deprecated") lists them.

Names and modules read from code warn with DeprecationWarning (shown to the code that reads them); configuration
keys read from a user's TOML file warn with FutureWarning (shown to the person running the command).
"""

import functools
import importlib
import sys
import warnings
from importlib.machinery import ModuleSpec

REMOVED_IN = "0.2.0"


def warn_renamed(old, new, category=DeprecationWarning, stacklevel=3):
    """Warn that `old` is deprecated in favour of `new` (both as the user would write them)."""
    warnings.warn(f"{old} is deprecated and will be removed in deft6g {REMOVED_IN}; use {new}", category,
                  stacklevel=stacklevel)


def module_aliases(module_name, aliases):
    """A module-level `__getattr__` (PEP 562) for renamed or moved module attributes. aliases: {old name: new
    name in this module, or the dotted path of where it moved, e.g. "deft6g.environment.quiet_stack"}; reading
    `module.old` warns and returns the new object; any other unknown name raises AttributeError."""
    def __getattr__(name):
        if name in aliases:
            new = aliases[name] if "." in aliases[name] else f"{module_name}.{aliases[name]}"
            warn_renamed(f"{module_name}.{name}", new)
            where, _, attribute = new.rpartition(".")
            return getattr(importlib.import_module(where), attribute)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
    return __getattr__


def moved_modules(package, moves):
    """Keeps the old paths of modules moved inside `package` importable. moves: {old name: new name}, both
    relative to `package` (e.g. {"training": "peft.training"}). Importing `package.old` (or a module inside it)
    warns and gives the moved module itself, the very object, so isinstance checks and monkeypatching see one
    module. Returns a module-level `__getattr__` for `package`: reading `package.old` warns and returns it."""
    full = {f"{package}.{old}": f"{package}.{new}" for old, new in moves.items()}
    sys.meta_path.insert(0, _MovedModules(full))   # first: a folder the move left behind (holding __pycache__
                                                   # only) would import as an empty namespace package

    def __getattr__(name):
        if name not in moves:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        warn_renamed(f"{package}.{name}", f"{package}.{moves[name]}")
        module = importlib.import_module(f"{package}.{moves[name]}")
        sys.modules[f"{package}.{name}"] = module      # bound as an import of the old path binds it: warns once
        setattr(sys.modules[package], name, module)
        return module
    return __getattr__


class _MovedModules:
    """The `sys.meta_path` finder of `moved_modules`. moves: {old dotted name: new dotted name}."""

    def __init__(self, moves):
        self.moves = moves

    def find_spec(self, name, path=None, target=None):
        old = next((o for o in self.moves if name == o or name.startswith(o + ".")), None)
        return None if old is None else ModuleSpec(name, _MovedModule(self.moves[old] + name[len(old):]))


class _MovedModule:
    """Loads an old name as the moved module `new` (warning), keeping that module's own `__spec__`."""

    def __init__(self, new):
        self.new = new

    def create_module(self, spec):
        warn_renamed(spec.name, self.new)
        module = importlib.import_module(self.new)
        self.spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self.spec                    # the import system set the old name's spec on it


def renamed_keys(data, renames, where, error=ValueError):
    """`data` (a dict of configuration keys) with each old key replaced by its new one, warning once per key.
    renames: {old key: (new key, convert)}, convert maps the old value to the new key's (e.g. one learning
    rate to a one-value grid). where: the file or section named in messages. A dict giving both an old key
    and its new one raises `error` naming both."""
    out = dict(data)
    for old, (new, convert) in renames.items():
        if old not in out:
            continue
        if new in out:
            raise error(f"configuration key {old!r} in {where} is the deprecated name of {new!r}; give only {new!r}")
        warn_renamed(f"configuration key {old!r} (in {where})", f"{new!r} = {convert(out[old])!r}", FutureWarning)
        out[new] = convert(out.pop(old))
    return out


def renamed_fields(aliases):
    """A class decorator for a dataclass whose fields were renamed. aliases: {old name: new name}. The
    constructor takes old=value (warns, passes it as new; giving both is a TypeError) and reading `obj.old`
    warns and returns `obj.new`."""
    def decorate(cls):
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            for old, new in aliases.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{cls.__name__}() got {old!r}, the deprecated name of {new!r}, and "
                                        f"{new!r}; give only {new!r}")
                    warn_renamed(f"{cls.__name__}({old}=...)", f"{cls.__name__}({new}=...)")
                    kwargs[new] = kwargs.pop(old)
            init(self, *args, **kwargs)

        def __getattr__(self, name):                 # only called for names the instance does not have
            if name in aliases:
                warn_renamed(f"{cls.__name__}.{name}", f"{cls.__name__}.{aliases[name]}")
                return getattr(self, aliases[name])
            raise AttributeError(f"{cls.__name__!r} object has no attribute {name!r}")

        cls.__init__, cls.__getattr__ = __init__, __getattr__
        return cls
    return decorate
