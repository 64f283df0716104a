"""The ``xpnet`` command: train, evaluate, predict, parity, info."""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import sys
import time
from pathlib import Path

from .. import __version__, backend
from ..data import BUILTIN, SCALINGS
from ..data.parts import CHUNK_ROWS
from ..errors import TrainingDiverged, XpnetError
from ..optim import OPTIMIZERS
from .config import RUN_OPTIONS, UsageError, namespace, new_config, resumed_config
from .folders import RESUME_FILE, new_folder_name, owned_folder, refuse_a_used_folder

__all__ = ["build_parser", "main"]

EXIT_USAGE = 2


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _hidden(text):
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths like 128,64, got {text!r}"
        ) from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {text!r}")
    return sizes


def _float(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


BACKEND_CHOICES = ["auto", *backend.SUPPORTED]


def _echo(args, text):
    if not args.json and not getattr(args, "quiet", False):
        print(text, flush=True)


# -- train ---------------------------------------------------------------------------------
def _cmd_train(args):
    from ..distributed import init as init_distributed
    from .runs import train_run

    comm = init_distributed()  # None unless started with mpiexec/srun and several processes
    root = comm is None or comm.rank == 0
    if args.resume:
        if args.force:
            raise UsageError(
                f"--force replaces a run in --out; --resume continues {args.resume} and "
                f"replaces nothing"
            )
        folder = Path(args.resume)
        given = [name for name in RUN_OPTIONS if getattr(args, name) is not None]
        config = resumed_config(folder, given, epochs=args.epochs)
    else:
        options = {name: getattr(args, name) for name in RUN_OPTIONS}
        config = new_config(options, epochs=args.epochs, data_parallel=comm is not None)
        folder = Path(args.out) if args.out else new_folder_name(config["dataset"])
        if comm is not None:  # the first process names the folder for all
            folder = comm.broadcast(folder)
    with owned_folder(folder) if root else contextlib.nullcontext():
        if not args.resume:
            refuse_a_used_folder(folder, force=args.force, comm=comm)
        try:
            metrics = train_run(
                config,
                folder,
                resume=bool(args.resume),
                quiet=args.quiet,
                echo=lambda text: _echo(args, text),
                comm=comm,
            )
        except TrainingDiverged as err:
            print(
                f"xpnet train: error: {err}; the last good state (end of epoch "
                f"{err.epoch - 1}) is in {folder / RESUME_FILE}",
                file=sys.stderr,
            )
            return 1
        except KeyboardInterrupt:
            print(
                f"xpnet train: interrupted; {folder / RESUME_FILE} holds the state at the end "
                f"of the last completed epoch. Continue with: xpnet train --resume {folder}",
                file=sys.stderr,
            )
            return 130
        except XpnetError:  # a missing data file is an OSError too; its message says it all
            raise
        except OSError as err:
            raise UsageError(f"cannot write to {folder}: {err.strerror or err}") from None
    if not root:
        return 0
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if k != "curves"}))
        return 0
    stopping = metrics["early_stopping"]
    if stopping and stopping["stopped_early"]:
        _echo(
            args,
            f"stopped early after epoch {stopping['stopped_at_epoch']}: the validation loss "
            f"had not improved for {stopping['patience']} epochs; restored epoch "
            f"{stopping['best_epoch']} (validation loss {stopping['best_val_loss']:.4f})",
        )
    elif stopping:
        _echo(
            args,
            f"early stopping did not trigger; restored the best epoch, "
            f"{stopping['best_epoch']} (validation loss {stopping['best_val_loss']:.4f})",
        )
    plot = metrics.get("curves")  # None: matplotlib is not installed
    _echo(
        args,
        f"trained {metrics['epochs_run']} epochs in {metrics['train_seconds']:.1f} "
        f"s; saved {metrics['checkpoint']}"
        + (f" and {plot}" if plot else " (no curves.png: pip install 'xpnet[plot]' to draw it)"),
    )
    print(f"test accuracy: {metrics['test_accuracy']:.4f}")
    return 0


# -- evaluate / predict ----------------------------------------------------------------------
def _load(args):
    from ..checkpoint import LEGACY_FORMATS, load_all

    xp, device = namespace(args.backend, getattr(args, "device", None))
    model, _, info = load_all(args.checkpoint, xp=xp, device=device)
    if info.get("format") in LEGACY_FORMATS:
        print(
            f"xpnet {args.command}: note: {args.checkpoint} is a checkpoint of format "
            f"{info['format']!r}, whose checksum covers its arrays only: its metadata "
            f"(classes, data record) cannot be checked",
            file=sys.stderr,
        )
    return model, info


def _cmd_evaluate(args):
    from ..nn import CrossEntropyLoss
    from ..train import evaluate
    from .evaluation import evaluate_lazily, evaluation_data

    model, meta = _load(args)
    X, y, source = evaluation_data(
        meta, args.dataset, label_column=args.label_column, all_rows=args.all_rows
    )
    if X.shape[1] != model.sizes[0]:
        raise UsageError(f"{source}: {X.shape[1]} features, the model expects {model.sizes[0]}")
    if backend.blockwise(model.xp):
        with backend.dask_scheduler(args.scheduler):
            loss, accuracy = evaluate_lazily(
                model, CrossEntropyLoss(), X, y, chunk_rows=args.chunk_rows or CHUNK_ROWS
            )
    else:
        _refuse_block_options(args)
        loss, accuracy = evaluate(model, CrossEntropyLoss(), X, y)
    lib, dev = backend.placement(model.layers[0].W)
    if args.json:
        print(
            json.dumps(
                {
                    "accuracy": accuracy,
                    "loss": loss,
                    "n": int(X.shape[0]),
                    "dataset": source,
                    "backend": lib,
                    "device": str(dev),
                }
            )
        )
    else:
        print(f"{source}, on {lib} ({dev})")
        print(f"loss: {loss:.4f}")
        print(f"accuracy: {accuracy:.4f}")
    return 0


def _cmd_predict(args):
    from ..data import read_features
    from .evaluation import legacy_input_scale, predictions, write_predictions

    model, meta = _load(args)
    divisor = legacy_input_scale(meta)
    if divisor:
        print(
            f"xpnet predict: note: {args.checkpoint} comes from an xpnet that divided its "
            f"training data by {divisor:g} before the model saw them: give it features "
            f"divided by {divisor:g}, or retrain to get a model that takes raw features",
            file=sys.stderr,
        )
    classes = meta.get("user", {}).get("classes") or list(range(model.sizes[-1]))
    if backend.blockwise(model.xp):
        return _predict_in_blocks(args, model, classes)
    _refuse_block_options(args)
    if glob.has_magic(args.input):
        raise UsageError(f"{args.input}: a glob of parts is scored with --backend dask")
    X = read_features(args.input, n_features=model.sizes[0])
    result, lines = predictions(model, X, classes, proba=args.proba)
    if args.out:
        write_predictions(args.out, result, lines)
    else:
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _predict_in_blocks(args, model, classes):
    """``xpnet predict`` on Dask: the input read, scored and written a block at a time."""
    from ..data.parts import feature_blocks
    from .evaluation import PredictionWriter, prediction_header, predictions_in_blocks

    blocks = feature_blocks(
        args.input, n_features=model.sizes[0], chunk_rows=args.chunk_rows or CHUNK_ROWS
    )
    known = all(block.rows is not None for block in blocks)
    total = f" of {sum(block.rows for block in blocks)}" if known else ""
    start = shown = time.perf_counter()
    header = prediction_header(classes, args.proba)
    with (
        backend.dask_scheduler(args.scheduler) as threads,
        PredictionWriter(args.out, header=header) as writer,
    ):
        for result, lines in predictions_in_blocks(
            model, blocks, classes, proba=args.proba, at_once=threads
        ):
            writer.write(result, lines)
            if args.out and time.perf_counter() - shown >= 10:
                shown = time.perf_counter()
                print(
                    f"xpnet predict: {writer.rows}{total} rows, "
                    f"{writer.rows / (shown - start):.0f} rows/s",
                    file=sys.stderr,
                )
    if args.out:
        seconds = time.perf_counter() - start
        print(
            f"xpnet predict: {writer.rows} rows in {seconds:.1f} s "
            f"({writer.rows / seconds:.0f} rows/s); wrote {args.out}",
            file=sys.stderr,
        )
    return 0


def _refuse_block_options(args):
    """--scheduler and --chunk-rows serve the block-by-block path only: never ignored."""
    for option, value in (("--scheduler", args.scheduler), ("--chunk-rows", args.chunk_rows)):
        if value is not None:
            raise UsageError(f"{option} applies to --backend dask only")


# -- parity / info ---------------------------------------------------------------------------
def _cmd_parity(args):
    from ..parity import format_table, run_parity

    names = None
    if args.backends:
        names = [b.strip() for b in args.backends.split(",") if b.strip()]
        for name in names:
            try:
                _backend_name(name)
            except argparse.ArgumentTypeError as err:
                raise UsageError(f"--backends: {err}") from None
    compared = [b for b in dict.fromkeys(names or backend.available()) if b != "numpy"]
    if not compared:
        print(
            "xpnet parity: error: no backend to compare with NumPy: "
            + ("only numpy was named" if names else "only numpy is usable here")
            + "; install another (pip install 'xpnet[torch]' or 'xpnet[array-api-strict]')"
            " or name it with --backends",
            file=sys.stderr,
        )
        return 1
    for name in compared:
        backend.allow_float64(name)  # as every command does (config.namespace)
    results = run_parity(names, steps=args.steps, dtype=args.dtype, seed=args.seed)
    if args.json:
        print(json.dumps({"dtype": args.dtype, "steps": args.steps, "results": results}))
    else:
        print(format_table(results, steps=args.steps, dtype=args.dtype))
    return 0 if all(r["ok"] for r in results) else 1


def _cmd_export(args):
    from ..checkpoint import load
    from ..onnx import export

    if Path(args.out).suffix.lower() != ".onnx":
        raise UsageError(f"{args.out}: an ONNX file's name ends in .onnx")
    model = load(args.checkpoint, xp="numpy")
    path = export(model, args.out, opset=args.opset, softmax=args.softmax)
    outputs = "logits and probabilities" if args.softmax else "logits"
    print(
        f"wrote {path}: {type(model).__name__}({model.extra_repr()}), "
        f"{backend.dtype_name(model.dtype)}, opset {args.opset}, outputs {outputs}"
    )
    return 0


def _cmd_bench(args):
    from .bench import main as bench_main

    bench_main(args)
    return 0


def _cmd_info(args):
    import platform

    info = {
        "xpnet": __version__,
        "python": platform.python_version(),
        "numpy": backend.library_version("numpy"),
        "array-api-compat": backend.compat_version(),
        "backends": backend.report(),
    }
    rows = info["backends"]
    if args.json:
        print(json.dumps(info))
        return 0
    print(
        f"xpnet {info['xpnet']} (python {info['python']}, numpy {info['numpy']}, "
        f"array-api-compat {info['array-api-compat']})"
    )
    for r in rows:
        devs = f"  devices: {', '.join(r['devices'])}" if r["devices"] else ""
        print(f"  {r['backend']:<18}{r['version'] or '-':<14}{r['state']}{devs}")
    return 0


# -- parser ------------------------------------------------------------------------------------
def build_parser():
    """The ``xpnet`` command's argument parser, with one subcommand per task.

    Returns
    -------
    argparse.ArgumentParser
        The parser; each subcommand sets ``func`` to its handler.
    """
    parser = argparse.ArgumentParser(
        prog="xpnet",
        description="Train MLPs on a GPU or CPU, save checkpoints that run anywhere, and "
        "check that the array backends agree.",
    )
    parser.add_argument("--version", action="version", version=f"xpnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train an MLP classifier and save it",
        description="Train an MLP classifier (default: the bundled digits).",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help=(
            f"{' or '.join(BUILTIN)} (built in; default digits), a .npz/.csv file, or a folder "
            "of MNIST-format IDX files or of X.npy and y.npy"
        ),
    )
    p.add_argument(
        "--label-column",
        default=None,
        help="CSV label column: index or header name (default: the last)",
    )
    p.add_argument(
        "--scale",
        choices=SCALINGS,
        default=None,
        help="the input scaling the model carries: standard (each feature's mean and "
        "deviation on the training split, as scikit-learn's StandardScaler), none, or auto "
        "(default): the digits divided by 16 and 8-bit images by 255, MNIST-1D as it is, "
        "data files standard",
    )
    p.add_argument(
        "--hidden",
        type=_hidden,
        default=None,
        help="hidden layer widths (default: 128,64); a model that cannot fit in the memory of "
        "its device is refused before it is built",
    )
    p.add_argument(
        "--activation",
        choices=["relu", "sigmoid", "tanh", "gelu"],
        default=None,
        help="hidden activation (default: relu)",
    )
    p.add_argument(
        "--batchnorm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="BatchNorm1d before each hidden activation (default: on)",
    )
    p.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="passes over the data (default 40; with --resume: a new total)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=None, help="(default: 32)")
    p.add_argument(
        "--optimizer",
        choices=list(OPTIMIZERS),
        default=None,
        help="(default: sgd, with momentum)",
    )
    p.add_argument(
        "--lr",
        type=_float,
        default=None,
        help="learning rate (default: 0.05 for sgd, 0.001 for adam and adamw)",
    )
    p.add_argument("--momentum", type=_float, default=None, help="sgd's (default: 0.9)")
    p.add_argument(
        "--weight-decay",
        type=_float,
        default=None,
        help="(default: 0; 0.01 for adamw, whose decay is decoupled)",
    )
    p.add_argument(
        "--schedule",
        choices=["constant", "step", "cosine"],
        default=None,
        help="learning rate per epoch: constant (default), step (a tenth every third of the "
        "epochs) or cosine (to zero at the last epoch)",
    )
    p.add_argument(
        "--warmup-epochs",
        type=int,
        default=None,
        metavar="N",
        help="raise the learning rate linearly from a tenth over the first N epochs (default: 0)",
    )
    p.add_argument(
        "--tf32",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="float32 products on TF32 tensor cores (NVIDIA GPUs; faster, 10-bit mantissa "
        "inputs; recorded in the checkpoint; default: off)",
    )
    p.add_argument(
        "--cuda-graph",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run each training step as one CUDA graph (--backend cupy, --optimizer sgd, "
        "no --dropout; the same numbers, fewer launches; default: off)",
    )
    p.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run each training step as one compiled program (--backend jax; "
        "the same equations, traced once per batch shape; default: off)",
    )
    p.add_argument(
        "--dropout",
        type=_float,
        default=None,
        metavar="P",
        help="dropout probability after each hidden activation (default: 0)",
    )
    p.add_argument(
        "--early-stopping",
        type=_positive_int,
        default=None,
        metavar="PATIENCE",
        help="hold out 10%% of the training set and stop when its loss has not "
        "improved for PATIENCE epochs",
    )
    _add_backend(p, default=None)
    p.add_argument(
        "--dtype", choices=["float32", "float64"], default=None, help="(default: float32)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seeds the split, the initial parameters and the shuffling (default: 0)",
    )
    p.add_argument("--out", default=None, help="output folder (default: runs/<dataset>-<time>)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the run already in --out (its checkpoints and metrics) instead of refusing",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress output (otherwise one line per epoch on stderr)",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="DIR",
        help="continue the interrupted run in DIR with its saved configuration (options "
        "that define the run are refused; --epochs sets a new total)",
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="accuracy and loss of a checkpoint",
        description="Accuracy and loss of a checkpoint. By default on the test split that "
        "training held out (same data, seed and test fraction, recorded in the checkpoint).",
    )
    p.add_argument("checkpoint")
    p.add_argument(
        "--dataset",
        default=None,
        help="a built-in dataset or a .npz/.csv file; the training file itself (recognised "
        "by its SHA-256) is scored on its test split, any other file whole "
        "(default: the data the model was trained on)",
    )
    p.add_argument(
        "--label-column", default=None, help="CSV label column (default: as in training)"
    )
    p.add_argument(
        "--all-rows", action="store_true", help="score every row instead of the test split"
    )
    _add_backend(p)
    _add_block_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "predict",
        help="class predictions for a .npy or .csv of features",
        description="Class predictions (or probabilities) for features. With --backend "
        "dask the input may be larger than memory: it is read, scored and written a "
        "block at a time.",
    )
    p.add_argument("checkpoint")
    p.add_argument(
        "input",
        help="a .npy array (N, F) or a .csv of features (header allowed); with --backend "
        "dask also a quoted glob of .npy, .csv or .parquet parts, taken in name order",
    )
    _add_backend(p)
    _add_block_options(p)
    p.add_argument("--proba", action="store_true", help="class probabilities instead of labels")
    p.add_argument("--out", default=None, help="write to FILE (.npy or .csv) instead of stdout")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("parity", help="check that the backends agree with NumPy")
    p.add_argument(
        "--backends", default=None, help="comma-separated (default: every backend usable here)"
    )
    p.add_argument("--steps", type=_positive_int, default=20)
    p.add_argument(
        "--dtype", choices=["float32", "float64"], default="float64", help="(default: float64)"
    )
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_parity)

    p = sub.add_parser(
        "export",
        help="write a checkpoint as an ONNX graph (pip install 'xpnet[onnx]')",
        description="Write a checkpoint as an ONNX graph of its evaluation-mode forward "
        "pass: input 'input' (batch dimension dynamic), output 'logits'.",
    )
    p.add_argument("checkpoint")
    p.add_argument("out", help="the .onnx file to write")
    p.add_argument("--opset", type=_positive_int, default=17, help="ONNX opset (default: 17)")
    p.add_argument("--softmax", action="store_true", help="add a 'probabilities' output (softmax)")
    p.set_defaults(func=_cmd_export)

    from . import bench

    p = sub.add_parser(
        "bench",
        help="time a training step against NumPy, PyTorch, sklearn",
        description=bench.DESCRIPTION,
    )
    bench.build_parser(p)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("info", help="versions, usable backends and devices")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)
    return parser


def _backend_name(name):
    """``--backend NAME``: ``auto``, a library xpnet knows by name (whether it is usable
    here is said when it is used), or the module of another Array API library."""
    if name not in BACKEND_CHOICES:
        try:
            backend.get(name)
        except (ValueError, ImportError) as err:  # no module, no Array API library, or a
            # library xpnet knows by name that is not installed here (dask)
            raise argparse.ArgumentTypeError(str(err)) from None
    return name


def _add_backend(p, default="auto"):
    p.add_argument(
        "--backend",
        type=_backend_name,
        default=default,
        help=f"array library: {', '.join(BACKEND_CHOICES)}, or any other Array API library by "
        "module name (auto: cupy when a CUDA device is usable, else numpy)",
    )
    p.add_argument("--device", default=None, help="device, e.g. cuda:1 or device1")


def _add_block_options(p):
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="with --backend dask: a dask.distributed scheduler, e.g. tcp://host:8786 "
        "(default: Dask's local threads)",
    )
    p.add_argument(
        "--chunk-rows",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"with --backend dask: rows per block (default: {CHUNK_ROWS})",
    )


def main(argv=None):
    """Run the ``xpnet`` command.

    User errors (any :class:`~xpnet.errors.XpnetError`, files that cannot be read or
    written, and an allocation that fails: :func:`xpnet.backend.out_of_memory`) are
    reported in one line on stderr with exit status 2; anything else is a bug and keeps
    its traceback.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0, 1 (a failed check, a diverged run), 2 (a user error) or 130
        (interrupted).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except XpnetError as err:
        print(f"xpnet {args.command}: error: {err}", file=sys.stderr)
        status = EXIT_USAGE
    except OSError as err:  # a file xpnet was asked to read or write
        where = f"{err.filename}: " if err.filename else ""
        print(f"xpnet {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        status = EXIT_USAGE
    except KeyboardInterrupt:
        print(f"xpnet {args.command}: interrupted", file=sys.stderr)
        status = 130
    except Exception as err:
        if not backend.out_of_memory(err):  # anything else is a bug: its traceback shows
            raise
        said = str(err) or type(err).__name__  # NumPy's says what it could not allocate
        print(f"xpnet {args.command}: error: out of memory: {said}", file=sys.stderr)
        status = EXIT_USAGE
    if status:
        _end_other_processes(status)
    return status


def _end_other_processes(status):
    """Under MPI, a process that fails ends the job, so that the others do not wait for it
    in their next all-reduce."""
    from ..distributed import active

    comm = active()
    if comm is not None:
        comm.abort(status)


if __name__ == "__main__":
    sys.exit(main())
