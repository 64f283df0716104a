"""Time one training step of xpnet, hand-written NumPy, PyTorch eager and scikit-learn.

    python benchmarks/step.py [--sizes tiny,mnist,mnist+bn,wide] [--seconds 2]

The same as ``xpnet bench``; see BENCHMARKS.md for the results and the machine.
"""

import sys

from xpnet.app.bench import main

if __name__ == "__main__":
    main(sys.argv[1:])
