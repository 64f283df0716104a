"""Namespace and device resolution: the one place that knows which libraries exist.

Everything outside ``xpnet.backend`` receives a namespace from :func:`namespace` (resolved
from the arrays of a call) or :func:`get` (from a library name) and uses only the Array API
standard through it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys

import array_api_compat

from .._io import host_memory_bytes
from ..errors import (
    BackendNotInstalledError,
    BackendUnavailableError,
    XpnetTypeError,
    XpnetValueError,
)

__all__ = [
    "DISTRIBUTIONS",
    "NAMED",
    "SUPPORTED",
    "available",
    "compat_version",
    "default_device",
    "device",
    "device_name",
    "devices",
    "get",
    "library_name",
    "library_version",
    "memory_bytes",
    "namespace",
    "on_host",
    "out_of_memory",
    "placement",
    "report",
    "resolve_device",
    "synchronize",
]

#: The libraries xpnet knows by name, in preference order: :func:`available` and
#: :func:`report` look for these. Any other Array API library is accepted too (see
#: :func:`get`), by its module name or as a namespace.
SUPPORTED = ("numpy", "cupy", "torch", "array_api_strict", "jax")

# where each library's Array API namespace lives: array-api-compat's wrapper, or the
# library's own module where it follows the standard itself
_COMPAT_MODULE: dict[str, str] = {
    "numpy": "array_api_compat.numpy",
    "cupy": "array_api_compat.cupy",
    "torch": "array_api_compat.torch",
    "array_api_strict": "array_api_strict",
    "jax": "jax.numpy",
    "dask": "array_api_compat.dask.array",
}
#: Every library xpnet knows by name: :data:`SUPPORTED` and Dask. A file that names a
#: library (a run's resume file) may name only these, so that reading it imports nothing
#: else.
NAMED = tuple(_COMPAT_MODULE)
#: The distributions on PyPI that install each library, in the order they are looked up
#: (a library not listed is looked up under its own name).
DISTRIBUTIONS = {
    "numpy": ("numpy",),
    "cupy": ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy"),
    "torch": ("torch",),
    "array_api_strict": ("array-api-strict",),
    "jax": ("jax",),
    "dask": ("dask",),
}
_INSTALL_HINT = {
    "numpy": "pip install numpy",
    "cupy": "pip install 'xpnet[cuda12]' or 'xpnet[cuda13]'",
    "torch": "pip install 'xpnet[torch]'",
    "array_api_strict": "pip install 'xpnet[array-api-strict]'",
    "jax": "pip install 'xpnet[jax]' (or 'jax[cuda12]' for a GPU)",
    "dask": "pip install 'xpnet[dask]'",
}

# type(array) -> (library name, namespace, library has more than one device)
_BY_TYPE: dict[type, tuple[str, object, bool]] = {}


def _library_of_type(x) -> tuple[str, object, bool]:
    entry = _BY_TYPE.get(type(x))
    if entry is None:
        try:
            xp = array_api_compat.array_namespace(x)
        except TypeError:
            raise XpnetTypeError(
                f"expected an array of an Array API library (NumPy, CuPy, PyTorch, JAX, "
                f"...), got {type(x).__module__}.{type(x).__qualname__}; "
                f"convert it first, e.g. with xpnet.backend.get('numpy').asarray(data)"
            ) from None
        name = library_name(xp)
        if name == "numpy":
            xp = _numpy_namespace()
        entry = (name, xp, name != "numpy")
        _BY_TYPE[type(x)] = entry
    return entry


def namespace(*arrays):
    """The Array API namespace shared by ``arrays``; raise if they mix libraries or devices.

    The resolution is cached per array type, so calling it once per public call costs about
    a microsecond.

    Parameters
    ----------
    *arrays : array
        One or more arrays.

    Returns
    -------
    namespace
        Their namespace (xpnet's own for NumPy arrays).

    Raises
    ------
    XpnetTypeError
        An argument is not an array, or the arrays come from different libraries.
    XpnetValueError
        The arrays live on different devices.
    """
    if not arrays:
        raise XpnetTypeError("namespace() needs at least one array")
    first = arrays[0]
    name, xp, multi_device = _library_of_type(first)
    for other in arrays[1:]:
        other_name = _library_of_type(other)[0]
        if other_name != name:
            raise XpnetTypeError(
                f"arrays from two libraries ({name} and {other_name}); convert one of them "
                f"with xpnet.backend.convert(x, {name!r}) or move the model with .to(...)"
            )
    if multi_device and len(arrays) > 1:
        dev = array_api_compat.device(first)
        for other in arrays[1:]:
            other_dev = array_api_compat.device(other)
            if other_dev != dev:
                raise XpnetValueError(
                    f"arrays on two devices ({dev} and {other_dev}); move one of them with "
                    f"xpnet.backend.convert(x, xp, device=...) or model.to(xp, device=...)"
                )
    return xp


def placement(x) -> tuple[str, str]:
    """The library and device of an array, by name, for messages and metadata.

    Parameters
    ----------
    x : array
        An array of any supported library.

    Returns
    -------
    library : str
        One of :data:`SUPPORTED`.
    device : str
        As :func:`device_name` spells it.
    """
    name, _, multi_device = _library_of_type(x)
    return name, (device_name(array_api_compat.device(x)) if multi_device else "cpu")


def on_host(x) -> bool:
    """Whether an array lives in host memory, so that reading a value back is free.

    Reading a value of a CUDA array (``float(x)``, ``to_numpy``) waits for the device to
    finish everything queued before it; code on the training path reads such values
    rarely (:func:`xpnet.train.fit` checks its losses every few steps on a device, every
    step on the host).

    Parameters
    ----------
    x : array
        An array of any supported library.

    Returns
    -------
    bool
        False for CuPy arrays and PyTorch CUDA tensors, True otherwise.
    """
    lib, dev = placement(x)
    return lib != "cupy" and not dev.startswith("cuda")


def synchronize(x) -> None:
    """Wait until the device of an array has finished all work queued on it.

    Benchmarks call it before reading the clock; nothing on the training path does.

    Parameters
    ----------
    x : array
        An array of any supported library (host arrays of the libraries that compute at
        once return at once; JAX's are waited for).
    """
    lib = _library_of_type(x)[0]
    if lib == "cupy":
        import cupy

        cupy.cuda.get_current_stream().synchronize()
    elif lib == "torch" and placement(x)[1].startswith("cuda"):
        import torch

        torch.cuda.synchronize(x.device)
    elif lib == "jax":  # on every device: JAX returns before it has computed
        x.block_until_ready()


def _numpy_namespace():
    from . import _numpy_fast

    return _numpy_fast.namespace


def library_name(xp) -> str:
    """The library name behind a namespace.

    Parameters
    ----------
    xp : namespace
        An Array API namespace.

    Returns
    -------
    str
        One of :data:`SUPPORTED`, ``"dask"``, or for any other library that declares
        ``__array_api_version__`` its top-level module name (``"ndonnx"``).

    Raises
    ------
    XpnetTypeError
        Not the namespace of an Array API library.
    """
    module = getattr(xp, "__name__", None)
    if not isinstance(module, str):  # no module at all
        raise XpnetTypeError(f"{xp!r} is not an Array API namespace")
    if module == "xpnet.backend.numpy" or array_api_compat.is_numpy_namespace(xp):
        return "numpy"
    for name, known in _KNOWN_NAMESPACE:
        if known(xp):
            return name
    if hasattr(xp, "__array_api_version__"):
        return module.partition(".")[0]
    raise XpnetTypeError(
        f"{module or xp!r} is not an Array API namespace: it declares no "
        f"__array_api_version__ and array-api-compat does not wrap it"
    )


_KNOWN_NAMESPACE = (
    ("cupy", array_api_compat.is_cupy_namespace),
    ("torch", array_api_compat.is_torch_namespace),
    ("array_api_strict", array_api_compat.is_array_api_strict_namespace),
    ("jax", array_api_compat.is_jax_namespace),
    ("dask", array_api_compat.is_dask_namespace),
)


def _cuda_visible() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device, broken install: all mean "not usable here"
        return False


def get(xp=None):
    """The Array API namespace for a library name or namespace.

    Any library that follows the Array API standard is accepted: those array-api-compat
    wraps (NumPy, CuPy, PyTorch, Dask) through its wrappers, JAX and array-api-strict
    directly, and any other module that declares ``__array_api_version__`` (ndonnx) by
    its module name or as itself.

    Parameters
    ----------
    xp : str or namespace, optional
        None (NumPy), a library name (``"numpy"``, ``"torch"``, ``"jax"``, ``"dask"``,
        ``"ndonnx"``, ...), a library module (``numpy``, ``torch``, ``jax.numpy``) or an
        already compatible namespace.

    Returns
    -------
    namespace
        The namespace xpnet computes with for that library.

    Raises
    ------
    XpnetTypeError
        ``xp`` is neither a name nor the namespace of an Array API library.
    XpnetValueError
        A name that is no installed module, or a module that is no Array API library.
    BackendNotInstalledError
        A library xpnet knows by name is not installed (the message says what to install).
    BackendUnavailableError
        ``"cupy"`` was asked for but no CUDA device is visible.
    """
    if xp is None:
        xp = "numpy"
    if not isinstance(xp, str):
        module = getattr(xp, "__name__", "")
        if module == "xpnet.backend.numpy":
            return xp
        if module in _COMPAT_MODULE:  # the library's top-level module: jax, dask
            return get(module)
        try:
            name = library_name(xp)
        except XpnetTypeError:
            raise XpnetTypeError(
                f"xp must be a library name ({', '.join(SUPPORTED)}, ...) or the namespace "
                f"of an Array API library, got {xp!r}"
            ) from None
        # a library module (numpy, torch) becomes the namespace xpnet computes with
        return get(name) if name in _COMPAT_MODULE else xp
    if xp == "numpy":
        return _numpy_namespace()
    if xp not in _COMPAT_MODULE:
        return _other_library(xp)
    if importlib.util.find_spec(xp) is None:
        raise BackendNotInstalledError(f"backend {xp!r} is not installed: {_INSTALL_HINT[xp]}")
    if xp == "cupy" and not _cuda_visible():
        raise BackendUnavailableError(
            "backend 'cupy' needs a visible CUDA device and none was found; "
            "use --backend numpy (or torch) on this machine"
        )
    return importlib.import_module(_COMPAT_MODULE[xp])


def _other_library(name):
    """The namespace of a library xpnet does not know by name: its module, if it declares
    the version of the standard it follows."""
    if not name.isidentifier() or importlib.util.find_spec(name) is None:
        raise XpnetValueError(
            f"unknown backend {name!r}: no module of that name is installed; expected one "
            f"of {', '.join(SUPPORTED)} or the module name of an Array API library"
        )
    module = importlib.import_module(name)
    if not hasattr(module, "__array_api_version__"):
        raise XpnetValueError(
            f"backend {name!r} is not an Array API library: its module declares no "
            f"__array_api_version__"
        )
    return module


def library_version(name) -> str | None:
    """The installed version of a library, read without importing it.

    Parameters
    ----------
    name : str
        A library name, as :func:`library_name` gives it.

    Returns
    -------
    str or None
        The version of the first of its :data:`DISTRIBUTIONS` installed; None when none is.
    """
    for dist in DISTRIBUTIONS.get(name, (name,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def compat_version() -> str | None:
    """The installed version of array-api-compat, through which xpnet reaches libraries.

    Returns
    -------
    str or None
        None when it is not installed.
    """
    try:
        return importlib.metadata.version("array-api-compat")
    except importlib.metadata.PackageNotFoundError:
        return None


def report() -> list[dict]:
    """What each supported library offers here, for ``xpnet info``.

    Returns
    -------
    list of dict
        One row per library: ``backend``, ``version``, ``state`` (``"usable"``,
        ``"not installed"``, ``"installed, no CUDA device visible"``) and ``devices``.
    """
    usable = available()
    rows = []
    for name in SUPPORTED:
        version = library_version(name)
        if version is None and importlib.util.find_spec(name) is None:
            state = "not installed"
        elif name in usable:
            state = "usable"
        else:
            state = "installed, no CUDA device visible"
        names = devices(get(name)) if name in usable else []
        rows.append({"backend": name, "version": version, "state": state, "devices": names})
    return rows


def available() -> list[str]:
    """The libraries usable here: installed, and for CuPy with a visible CUDA device.

    Returns
    -------
    list of str
        Names from :data:`SUPPORTED`, in its order.
    """
    names = []
    for name in SUPPORTED:
        if importlib.util.find_spec(name) is None:
            continue
        if name == "cupy" and not _cuda_visible():
            continue
        names.append(name)
    return names


def device_name(dev) -> str:
    """A short, user-facing name for a device.

    Parameters
    ----------
    dev : device or None
        A device object of any supported library.

    Returns
    -------
    str
        ``"cpu"``, ``"cuda:0"``, ``"device1"``; ``"default"`` for None.
    """
    if dev is None:
        return "default"
    text = str(dev)
    if text.startswith("array_api_strict.Device("):
        return text[len("array_api_strict.Device(") : -1].strip("'\"")
    if text.startswith("<CUDA Device "):  # cupy.cuda.Device
        return f"cuda:{dev.id}"
    return text


def devices(xp) -> list[str]:
    """The devices a library offers here.

    Parameters
    ----------
    xp : namespace
        An Array API namespace.

    Returns
    -------
    list of str
        Their names, as :func:`device_name` spells them; a CUDA device's card follows in
        parentheses (``"cuda:0 (NVIDIA H100 80GB HBM3)"``).
    """
    name = library_name(xp)
    if name == "numpy":
        return ["cpu"]
    if name == "torch":
        import torch

        cards = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return ["cpu"] + [f"cuda:{i} ({card})" for i, card in enumerate(cards)]
    if name == "cupy":
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        cards = [cupy.cuda.runtime.getDeviceProperties(i)["name"] for i in range(count)]
        return [
            f"cuda:{i} ({card.decode() if isinstance(card, bytes) else card})"
            for i, card in enumerate(cards)
        ]
    return [device_name(d) for d in _info_devices(xp)]


def _info_devices(xp):
    # JAX lists None (its default placement) among its devices
    return [d for d in xp.__array_namespace_info__().devices() if d is not None]


def default_device(xp):
    """The device a library puts new arrays on.

    The standard's ``__array_namespace_info__().default_device()``, or where the library
    places an array when that answers None (JAX, whose default follows its configuration).

    Parameters
    ----------
    xp : namespace
        An Array API namespace.

    Returns
    -------
    device
        The library's device object.
    """
    dev = xp.__array_namespace_info__().default_device()
    return dev if dev is not None else array_api_compat.device(xp.empty(0))


def memory_bytes(xp, dev=None) -> int | None:
    """The memory that the arrays of a library on a device live in, in bytes.

    A CUDA device's own memory (CuPy, PyTorch), or for arrays on the host (NumPy,
    array-api-strict, Dask, PyTorch and JAX on the CPU) what this process can have there
    (``xpnet._io.host_memory_bytes``: physical memory, or ``ulimit -v`` where lower). It
    is the total, not what is free now: a size that exceeds it cannot fit at all.

    Parameters
    ----------
    xp : namespace
        An Array API namespace.
    dev : device, optional
        One of its devices (None: its default device).

    Returns
    -------
    int or None
        Bytes; None for a device whose memory xpnet cannot ask about (JAX's accelerators,
        another library's).
    """
    name = library_name(xp)
    dev = default_device(xp) if dev is None else dev
    if name == "cupy":
        import cupy

        with cupy.cuda.Device(getattr(dev, "id", dev)):
            return int(cupy.cuda.runtime.memGetInfo()[1])
    if name == "torch" and dev.type != "cpu":
        import torch

        return int(torch.cuda.mem_get_info(dev)[1]) if dev.type == "cuda" else None
    if name == "jax" and dev.platform != "cpu":
        return None
    if name in ("torch", "jax", "numpy", "array_api_strict", "dask"):
        return host_memory_bytes()
    return None


def out_of_memory(err: BaseException) -> bool:
    """Whether an exception says that an allocation failed.

    NumPy and CuPy raise :class:`MemoryError`; PyTorch raises ``torch.OutOfMemoryError``,
    a :class:`RuntimeError`.

    Parameters
    ----------
    err : BaseException
        The exception.

    Returns
    -------
    bool
        True for those exceptions.
    """
    if isinstance(err, MemoryError):
        return True
    torch = sys.modules.get("torch")  # only if imported: an error of it cannot come otherwise
    return torch is not None and isinstance(err, getattr(torch, "OutOfMemoryError", ()))


def device(x):
    """The device an array lives on (the standard's ``x.device``, uniform across libraries).

    Parameters
    ----------
    x : array
        An array of any supported library.

    Returns
    -------
    device
        The library's device object.
    """
    return array_api_compat.device(x)


def _torch_device(dev):
    """A PyTorch device that exists and can hold a tensor here, or one line on why not."""
    import torch

    if not isinstance(dev, (str, int)):
        return dev
    try:
        device = torch.device(dev)
    except RuntimeError:
        raise XpnetValueError(
            f"{dev!r} is not a PyTorch device; use cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.backends.cuda.is_built() else 0
        if count == 0:
            why = (
                f"this PyTorch ({torch.__version__}) was built without CUDA"
                if not torch.backends.cuda.is_built()
                else "no CUDA device is visible"
            )
            raise XpnetValueError(
                f"PyTorch device {dev!r} cannot be used: {why}; use --device cpu, or a "
                f"machine with an NVIDIA GPU and a CUDA build of PyTorch"
            )
        if device.index is not None and device.index >= count:
            raise XpnetValueError(
                f"PyTorch device {dev!r} does not exist: {count} CUDA device(s) visible "
                f"(cuda:0 to cuda:{count - 1})"
            )
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:  # a device type not built or present
        first = (str(err).splitlines() or [type(err).__name__])[0].split(". ")[0]
        raise XpnetValueError(f"PyTorch device {dev!r} cannot be used here: {first}") from None
    return device


def resolve_device(xp, dev):
    """Turn a user's device spelling into the library's device object.

    Parameters
    ----------
    xp : namespace
        The library's namespace.
    dev : str, int, device or None
        None keeps the library default. Strings are accepted everywhere: ``"cpu"`` for
        NumPy, ``"cpu"``/``"cuda:1"`` for PyTorch, ``"0"``/``"cuda:1"`` for CuPy,
        ``"CPU_DEVICE"``/``"device1"`` for array-api-strict; for any other library the
        names :func:`devices` lists (JAX: ``"cpu:0"``, or ``"cpu"`` for its first CPU).
        Device objects pass through.

    Returns
    -------
    device or None
        The device object.

    Raises
    ------
    XpnetValueError
        A device the library does not have, or one it cannot use here (a CUDA device
        with a PyTorch built without CUDA, a device index beyond those visible).
    """
    if dev is None:
        return None
    name = library_name(xp)
    if name == "numpy":
        if str(dev) != "cpu":
            raise XpnetValueError(f"NumPy arrays live on 'cpu' only, got device {dev!r}")
        return "cpu"
    if name == "torch":
        return _torch_device(dev)
    if name == "cupy":
        import cupy

        if isinstance(dev, str):
            dev = dev.removeprefix("cuda").lstrip(":") or "0"
            if not dev.isdigit():
                raise XpnetValueError(f"CuPy devices are 'cuda:N' or N, got {dev!r}")
            dev = int(dev)
        if isinstance(dev, int):
            try:
                count = cupy.cuda.runtime.getDeviceCount()
            except cupy.cuda.runtime.CUDARuntimeError as err:
                raise XpnetValueError(f"CuPy cannot use a CUDA device here: {err}") from None
            if not 0 <= dev < count:
                raise XpnetValueError(
                    f"CUDA device {dev} does not exist: {count} visible (0 to {count - 1})"
                )
            return cupy.cuda.Device(dev)
        return dev
    if not isinstance(dev, str):
        return dev
    known = _info_devices(xp)
    for d in known:
        spelled = device_name(d)
        if dev in (spelled, repr(d)) or f"{dev}:0" == spelled:
            return d
    names = ", ".join(device_name(d) for d in known)
    raise XpnetValueError(f"unknown {name} device {dev!r}; known: {names}")
