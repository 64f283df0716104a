"""Train a small MLP on NumPy, then move it to another array library and run it there.

python examples/quickstart.py [numpy|torch|array_api_strict|cupy]

Without an argument it moves the model to the first of CuPy, PyTorch and array-api-strict
that is installed and usable here, and stays on NumPy on the base install
(``pip install .``).
"""

import sys

import numpy as np

from xpnet import backend
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss
from xpnet.optim import SGD

rng = np.random.default_rng(0)
X = rng.standard_normal((256, 8)).astype(np.float32)
y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)  # two classes

model = MLP([8, 32, 2], batchnorm=True, seed=0)  # NumPy, float32
loss, opt = CrossEntropyLoss(), SGD(model, lr=0.1, momentum=0.9)
for _ in range(200):
    L = loss.forward(model.forward(X), y)
    model.backward(loss.backward())
    opt.step()

model.eval()
accuracy = (np.argmax(model.forward(X), axis=1) == y).mean()
print(f"numpy: loss {float(L):.4f}, training accuracy {accuracy:.3f}")

others = [name for name in ("cupy", "torch", "array_api_strict") if name in backend.available()]
target = sys.argv[1] if len(sys.argv) > 1 else (others or ["numpy"])[0]
if target not in backend.available():
    sys.exit(f"{target} is not usable here; try one of {backend.available()}")
xp = backend.get(target)
model.to(target)
predicted = backend.to_numpy(xp.argmax(model.forward(xp.asarray(X)), axis=1))
print(f"{target}: accuracy {(predicted == y).mean():.3f} after model.to({target!r})")
