"""The migration path: renamed names and configuration keys keep working for one release (until deft6g
REMOVED_IN) and warn with what replaced them. CHANGELOG.md ("Deprecated") lists them.

Names read from code warn with DeprecationWarning (shown to the code that reads them); configuration keys
read from a user's TOML file warn with FutureWarning (shown to the person running the command).
"""

import functools
import sys
import warnings

REMOVED_IN = "0.2.0"


def warn_renamed(old, new, category=DeprecationWarning, stacklevel=3):
    """Warn that `old` is deprecated in favour of `new` (both as the user would write them)."""
    warnings.warn(f"{old} is deprecated and will be removed in deft6g {REMOVED_IN}; use {new}", category,
                  stacklevel=stacklevel)


def module_aliases(module_name, aliases):
    """A module-level `__getattr__` (PEP 562) for renamed module attributes. aliases: {old name: new name};
    reading `module.old` warns and returns `module.new`; any other unknown name raises AttributeError."""
    def __getattr__(name):
        if name in aliases:
            warn_renamed(f"{module_name}.{name}", f"{module_name}.{aliases[name]}")
            return getattr(sys.modules[module_name], aliases[name])
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
    return __getattr__


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
