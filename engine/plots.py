"""Figures of a run: accuracy and loss curves, train vs validation (what the seed experiments plot)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from engine.files import atomic_open  # noqa: E402


def curves(history: list, path: str, title: str = "") -> None:
    if not history:
        return
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "accuracy", "accuracy"), (axes[1], "loss", "loss")):
        ax.plot(epochs, [h[key] for h in history], "o-", label=f"train {label}")
        validated = [h for h in history if h[f"val_{key}"] is not None]  # (--eval-every: not every epoch)
        if validated:
            ax.plot([h["epoch"] for h in validated], [h[f"val_{key}"] for h in validated], "s-",
                    label=f"validation {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_open(path) as f:
            fig.savefig(f, dpi=100, format="png")
    finally:
        plt.close(fig)
