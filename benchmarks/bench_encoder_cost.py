"""What the real-dataset recipes cost: FLOPs per movie counted, CPU time measured, H100 estimated.

For each recipe's encoders, built at their real sizes from their architecture hyperparameters
(random weights: no hub), this
1. counts the forward FLOPs of one movie (one poster at the backbone's size, the plot as the
   text encoder reads it: the median MM-IMDb plot of 147 word pieces, cut into the windows of
   a dual encoder's text tower) with torch.utils.flop_counter on the meta device;
2. times that forward on this machine's CPU (fp32, batch 1, best of --repeats) and reports the
   FLOP rate it reached, which checks the count against a clock;
3. estimates each recipe step on one H100 SXM (989 TFLOP/s dense bf16) at an assumed model
   FLOP utilisation (--mfu, default 0.35; printed, since it is an assumption): caching the
   frozen features of all 25,959 movies, and end-to-end fine-tuning (train forward + backward
   of the unfrozen blocks, 2x their forward; dev evaluation every epoch; the final dev + test).
Head searches on cached features cost no measurable accelerator time (a head is ~5 MFLOP per
movie); their cost is the loader's, measured in benchmarks/bench_cached_features.py.

    OMP_NUM_THREADS=2 python benchmarks/bench_encoder_cost.py [--only siglip] [--no-cpu]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

H100_BF16_FLOPS = 989e12
MOVIES, TRAIN, DEV, TEST = 25_959, 15_552, 2_608, 7_799
MEDIAN_PLOT_PIECES = 147


@dataclass
class Tower:
    build: Callable[[], nn.Module]  # on the current default device
    inputs: Callable[[str], dict[str, torch.Tensor]]  # device -> forward kwargs for one movie
    layers: int
    frozen_layers: int  # as the recipe config freezes them


@dataclass
class Recipe:
    name: str
    config: str
    image: Tower
    text: Tower
    epochs: int = 5


def _siglip_so400m() -> Any:
    from transformers import SiglipConfig

    common = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16}
    return SiglipConfig(
        text_config=dict(common, max_position_embeddings=64, vocab_size=32000),
        vision_config=dict(common, image_size=384, patch_size=14),
    )


def _clip_large() -> Any:
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config={
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 77,
        },
        vision_config={
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
        },
        projection_dim=768,
    )


def _windows(window: int, specials: int) -> int:
    return math.ceil(MEDIAN_PLOT_PIECES / (window - specials))


def dual_recipe(
    name: str, config_path: str, make_config: Callable[[], Any], specials: int, vision_frozen: int, text_frozen: int
) -> Recipe:
    from transformers import AutoModel

    config = make_config()
    window = config.text_config.max_position_embeddings
    windows = _windows(window, specials)
    size = config.vision_config.image_size

    def tower(part: str) -> Callable[[], nn.Module]:
        return lambda: getattr(AutoModel.from_config(config), part)

    image = Tower(
        tower("vision_model"),
        lambda d: {"pixel_values": torch.zeros(1, 3, size, size, device=d)},
        config.vision_config.num_hidden_layers,
        vision_frozen,
    )
    text = Tower(
        tower("text_model"),
        lambda d: {"input_ids": torch.ones(windows, window, dtype=torch.long, device=d)},
        config.text_config.num_hidden_layers,
        text_frozen,
    )
    return Recipe(name, config_path, image, text)


def baseline_recipe() -> Recipe:
    """configs/early_fusion.yaml: DistilBERT (2 of 6 layers frozen) + ResNet-18 (to layer2)."""
    from torchvision.models import resnet18
    from transformers import AutoModel, DistilBertConfig

    length = MEDIAN_PLOT_PIECES + 2
    image = Tower(lambda: resnet18(), lambda d: {"x": torch.zeros(1, 3, 224, 224, device=d)}, 5, 3)
    text = Tower(
        lambda: AutoModel.from_config(DistilBertConfig()),
        lambda d: {"input_ids": torch.ones(1, length, dtype=torch.long, device=d)},
        6,
        2,
    )
    return Recipe("distilbert + resnet18", "configs/early_fusion.yaml", image, text)


def dinov2_recipe() -> Recipe:
    """configs/dinov2_fusion.yaml: MiniLM-L6 (trainable) + DINOv2-base (6 of 12 frozen)."""
    from transformers import AutoModel, BertConfig, Dinov2Config

    length = min(MEDIAN_PLOT_PIECES + 2, 256)
    image = Tower(
        lambda: AutoModel.from_config(Dinov2Config(image_size=224, patch_size=14)),
        lambda d: {"pixel_values": torch.zeros(1, 3, 224, 224, device=d)},
        12,
        6,
    )
    text = Tower(
        lambda: AutoModel.from_config(
            BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
        ),
        lambda d: {"input_ids": torch.ones(1, length, dtype=torch.long, device=d)},
        6,
        0,
    )
    return Recipe("minilm + dinov2-base", "configs/dinov2_fusion.yaml", image, text)


RECIPES: dict[str, Callable[[], Recipe]] = {
    "baseline": baseline_recipe,
    "dinov2": dinov2_recipe,
    "clip": lambda: dual_recipe("clip-vit-large-patch14", "configs/clip_large_fusion.yaml", _clip_large, 2, 12, 6),
    "siglip": lambda: dual_recipe("siglip-so400m-patch14-384", "configs/siglip_fusion.yaml", _siglip_so400m, 1, 14, 14),
}


def count_flops(tower: Tower) -> tuple[float, int]:
    """(forward FLOPs for one movie, parameters), on the meta device (no memory, no time)."""
    with torch.device("meta"):
        module = tower.build()
    with FlopCounterMode(display=False) as counter:
        module(**tower.inputs("meta"))
    return float(counter.get_total_flops()), sum(p.numel() for p in module.parameters())


@torch.no_grad()
def cpu_seconds(tower: Tower, repeats: int) -> float:
    """Best-of-`repeats` wall time of one movie's forward on the CPU, fp32, random weights."""
    module = tower.build().eval()  # on the CPU, with its own random initialisation
    inputs = tower.inputs("cpu")
    module(**inputs)  # warm-up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        module(**inputs)
        best = min(best, time.perf_counter() - start)
    return best


def hours(flops: float, mfu: float) -> float:
    return flops / (H100_BF16_FLOPS * mfu) / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RECIPES), action="append", help="recipes to cost (default: all)")
    parser.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOP utilisation on the H100")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU timing (FLOP counts only)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; H100 estimates at "
        f"{args.mfu:.0%} of {H100_BF16_FLOPS / 1e12:.0f} TFLOP/s bf16 (an assumption, not a measurement)"
    )
    header = (
        "| recipe | params | GFLOP/movie (poster + plot) | CPU s/movie | CPU GFLOP/s "
        "| cache features, H100 | fine-tune 5 epochs, H100 |"
    )
    rows = [header, "|" + "---|" * 7]
    for key in args.only or list(RECIPES):
        recipe = RECIPES[key]()
        image_flops, image_params = count_flops(recipe.image)
        text_flops, text_params = count_flops(recipe.text)
        forward = image_flops + text_flops
        trainable_share = sum(
            f * (1 - t.frozen_layers / t.layers) for f, t in ((image_flops, recipe.image), (text_flops, recipe.text))
        )
        train_step = forward + 2 * trainable_share
        cache = MOVIES * forward
        finetune = recipe.epochs * (TRAIN * train_step + DEV * forward) + (DEV + TEST) * forward
        cpu = "-"
        rate = "-"
        if not args.no_cpu:
            seconds = cpu_seconds(recipe.image, args.repeats) + cpu_seconds(recipe.text, args.repeats)
            cpu, rate = f"{seconds:.2f}", f"{forward / seconds / 1e9:.0f}"
        rows.append(
            f"| {recipe.name} (`{recipe.config}`) | {(image_params + text_params) / 1e6:.0f} M "
            f"| {forward / 1e9:.1f} ({image_flops / 1e9:.1f} + {text_flops / 1e9:.1f}) | {cpu} | {rate} "
            f"| {hours(cache, args.mfu) * 3600:.0f} s | {hours(finetune, args.mfu) * 60:.1f} min |"
        )
        print(rows[-1], flush=True)
    print("\n".join(["", *rows]))


if __name__ == "__main__":
    main()
