"""On a CUDA GPU: run steady-state training steps with device synchronisation forbidden.

A step of ``xpnet.train.fit`` (forward, the loss on labels checked once, backward, the
optimizer's update) must not wait for the device: ``cupyx.allow_synchronize(False)`` turns
any synchronisation (a value read back, a device-to-host copy) into an error.

    python benchmarks/gpu_nosync.py          # prints one line per configuration
"""

import sys

import numpy as np

from xpnet import backend
from xpnet.executors import make_step
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss
from xpnet.optim import SGD


def check(batchnorm, steps=20):
    import cupyx

    xp = backend.get("cupy")
    rng = np.random.default_rng(0)
    X = xp.asarray(rng.standard_normal((128, 784)).astype(np.float32))
    y = xp.asarray(rng.integers(0, 10, 128))
    model = MLP([784, 256, 128, 10], batchnorm=batchnorm, xp=xp)
    step = make_step(model, CrossEntropyLoss(), SGD(model, lr=0.05, momentum=0.9))
    # what fit runs (the fused plan on CuPy); the labels are checked once, before training

    step(X, y)  # warm-up: kernels compiled, buffers allocated
    backend.synchronize(X)
    try:
        with cupyx.allow_synchronize(False):
            for _ in range(steps):
                step(X, y)
    except Exception as err:  # report whatever synchronised, and where
        return f"FAIL ({type(err).__name__}: {err})"
    backend.synchronize(X)
    return f"ok ({steps} steps, no synchronisation)"


if __name__ == "__main__":
    if "cupy" not in backend.available():
        sys.exit("gpu_nosync: needs CuPy and a CUDA device")
    results = {f"batchnorm={bn}": check(bn) for bn in (False, True)}
    for name, status in results.items():
        print(f"no-sync step, mnist b128, {name}: {status}")
    sys.exit(0 if all(s.startswith("ok") for s in results.values()) else 1)
