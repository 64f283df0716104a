"""Names for the types of xpnet's public signatures.

Arrays and namespaces come from several libraries that share no base class, so their
annotations are aliases of ``Any`` that say what is meant.
"""

from __future__ import annotations

from typing import Any, TypeAlias

#: An array of any supported library (NumPy, CuPy, PyTorch, array-api-strict).
Array: TypeAlias = Any
#: An Array API namespace, or a library name that :func:`xpnet.backend.get` accepts.
Namespace: TypeAlias = Any
#: A device object of any supported library, or its name (``"cpu"``, ``"cuda:1"``).
Device: TypeAlias = Any
#: A dtype of any supported library, or its name (``"float32"``).
DType: TypeAlias = Any

#: A seed for the host generator: an int, a ``numpy.random.Generator`` to share, or None.
Seed: TypeAlias = Any

__all__ = ["Array", "DType", "Device", "Namespace", "Seed"]
