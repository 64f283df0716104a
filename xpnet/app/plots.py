"""The learning curves of a run, drawn with matplotlib when it is installed."""

from __future__ import annotations

import io

from .._io import atomic_write

__all__ = ["plot_curves"]


def plot_curves(history, path, *, best_epoch=None):
    """Loss and accuracy per epoch (training, and validation when measured) as a PNG.

    Parameters
    ----------
    history : list of dict
        ``fit``'s history.
    path : Path
        Where to write the image (atomically).
    best_epoch : int, optional
        The epoch whose parameters early stopping kept, marked on both plots.

    Returns
    -------
    str or None
        The path written, or None without matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        if history and key in history[0]:
            ax_loss.plot(epochs, [r[key] for r in history], label=label)
    for key, label in (("accuracy", "train"), ("val_accuracy", "validation")):
        if history and key in history[0]:
            ax_acc.plot(epochs, [r[key] for r in history], label=label)
    if best_epoch is not None:  # the epoch whose parameters early stopping kept
        for ax in (ax_loss, ax_acc):
            ax.axvline(best_epoch, color="grey", linestyle="--", label=f"kept: epoch {best_epoch}")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_loss.legend()
    ax_acc.legend()
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, image.getvalue())
    return str(path)
